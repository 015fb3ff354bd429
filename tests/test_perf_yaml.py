"""A config is read from the YAML parser's events, without PyYAML's node tree: the same
data as PyYAML's safe loader, the line of every key and item, in a fraction of the memory
(10,000 searches: the nodes and their marks alone held 44 MiB)."""

from __future__ import annotations

import random
import tracemalloc
from typing import Any

import pytest
import yaml

from alertd.errors import ConfigError
from alertd.yamlsource import parse_yaml

LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def pyyaml(text: str) -> Any:
    return yaml.load(text, Loader=LOADER)  # the safe loader, as alertd chooses it


def random_value(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth > 3 or roll < 0.5:
        return rng.choice(
            [None, True, 7, -5, 1.5, "x", "", "yes", "5m", "json://a/b", "2026-01-01", "a: b"]
        )
    if roll < 0.75:
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    keys = ["a", "b", "1", "name", "notify", "<<x"]
    return {rng.choice(keys): random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))}


@pytest.mark.parametrize("seed", range(4))
def test_the_data_is_what_pyyaml_safe_loader_builds(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(500):
        text = yaml.safe_dump(random_value(rng), default_flow_style=rng.random() < 0.3)
        assert parse_yaml(text, "x.yaml").data == pyyaml(text), text


@pytest.mark.parametrize(
    "text",
    [
        "a: &x {b: 1, c: [1, 2]}\nd: *x\ne: [*x, *x]\n",
        "base: &b {x: 1, y: 2}\nm:\n  <<: *b\n  z: 3\n",
        "m:\n  <<: [{a: 1}, {a: 2, b: 2}]\n  c: 3\n",
        "a: yes\nb: 2026-01-01\nc: 1.5\nd: ~\ne: '5'\nf: !!str 5\ng: 0x1f\n",
        "'<<': 1\nb: 2\n",
        "- &a 1\n- *a\n- {k: *a}\n",
        "a: |\n  text\n  more\nb: >\n  folded\n",
        "",
        "# only a comment\n",
    ],
)
def test_anchors_merges_tags_and_scalars_as_pyyaml_reads_them(text: str) -> None:
    data = parse_yaml(text, "x.yaml").data
    assert data == pyyaml(text) and list(data or ()) == list(pyyaml(text) or ())


def test_an_overridden_merged_key_is_the_mapping_s_own() -> None:
    # The node walk saw the merged key and the mapping's own as one key written twice.
    doc = parse_yaml("base: &b {x: 1, y: 2}\nm:\n  <<: *b\n  y: 3\n", "x.yaml")
    assert doc.data["m"] == {"x": 1, "y": 3}
    assert doc.line_of(("m", "y")) == 4 and doc.line_of(("m", "x")) == 3


def test_every_key_and_item_has_its_line() -> None:
    text = "api_url: http://h\nsearches:\n  - name: a\n    notify:\n      - json://x/y\n  - b\n"
    doc = parse_yaml(text, "x.yaml")
    assert doc.lines == {
        (): 1,
        ("api_url",): 1,
        ("searches",): 2,
        ("searches", 0): 3,
        ("searches", 0, "name"): 3,
        ("searches", 0, "notify"): 4,
        ("searches", 0, "notify", 0): 5,
        ("searches", 1): 6,
    }


@pytest.mark.parametrize(
    ("text", "message", "line"),
    [
        ("a: 1\nb: 2\na: 3\n", "this key appears twice in the same mapping", 3),
        ("a: [1, 2\n", "YAML syntax error", 2),
        ("a: *nope\n", "found undefined alias", 1),
        ("a: !!int x\n", "YAML error", None),
        ("--- 1\n--- 2\n", "found another document", 2),
        ("? [1, 2]\n: x\n", "found unhashable key", 1),
    ],
)
def test_a_mistake_is_one_config_error_with_its_line(
    text: str, message: str, line: int | None
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_yaml(text, "x.yaml")
    assert message in caught.value.message and caught.value.line == line


def searches_yaml(count: int) -> str:
    parts = ["api_url: http://127.0.0.1:9", "searches:"]
    for n in range(count):
        parts += [f"- name: s{n:05d}", "  category: RLHF", "  language: Spanish"]
        parts += ["  country: US", "  notify:", f"  - json://127.0.0.1:9/s{n:05d}"]
    return "\n".join(parts) + "\n"


def test_reading_2000_searches_takes_little_more_memory_than_their_data() -> None:
    text = searches_yaml(2000)
    tracemalloc.start()
    try:
        doc = parse_yaml(text, "x.yaml")
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(doc.data["searches"]) == 2000
    # Held: 3.4 MiB of data and line index. Through PyYAML's node tree the peak was 11.6.
    assert peak < 2 * held, f"peak {peak / 2**20:.1f} MiB, held {held / 2**20:.1f} MiB"
