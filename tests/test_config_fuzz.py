"""A config fuzzer: whatever the file says, the outcome is a config or one ConfigError."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alertd.config import Config, parse_config
from alertd.errors import ConfigError
from alertd.settings import FILE_KEYS, SEARCH_KEYS, SETTING_KEYS

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
    | st.sampled_from(["5m", "1h30m", "json://127.0.0.1:9/x", "RLHF", "PAY_PER_HOUR", "~", ""])
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
search = st.dictionaries(st.sampled_from([*SEARCH_KEYS, "bogus"]), values, max_size=6)
top_keys = st.sampled_from([*SETTING_KEYS, *FILE_KEYS, "include", "bogus"])
documents = st.dictionaries(top_keys, values, max_size=6) | st.fixed_dictionaries(
    {"searches": st.lists(search | values, max_size=4)},
    optional={"channels": st.dictionaries(st.text(max_size=8), values, max_size=3)},
)


def outcome(text: str, base: Path) -> Config | ConfigError:
    try:
        return parse_config(text, "fuzz.yaml", base=base)
    except ConfigError as exc:
        assert "\n" not in exc.describe()  # one line
        return exc


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_any_structure_is_a_config_or_one_config_error(
    tmp_path_factory: pytest.TempPathFactory, document: dict[str, Any]
) -> None:
    text = yaml.safe_dump(document, allow_unicode=True)
    outcome(text, tmp_path_factory.mktemp("fuzz"))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=200))
def test_any_text_is_a_config_or_one_config_error(
    tmp_path_factory: pytest.TempPathFactory, text: str
) -> None:
    outcome(text, tmp_path_factory.mktemp("fuzz"))
