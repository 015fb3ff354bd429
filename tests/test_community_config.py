"""The ``community:`` section: checked by ``alertd validate`` with file, line and field;
shown commented out by ``alertd init``; its mail password kept out of the log."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from alertd.config import parse_config
from alertd.errors import ConfigError
from tests.conftest import RunCli

GOOD = """\
community:
  name: Annotators Guild
  public_url: https://alerts.example.org
  listen: 127.0.0.1:8080
  signup: open
  mail: mailtos://alerts:${SMTP_PASSWORD}@smtp.example.org?from=alerts@example.org
  limits: {searches_per_member: 10, alerts_per_member_per_day: 50}
"""


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "alerts.yaml")
    return caught.value.describe()


def test_the_issue_section_is_read_with_its_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMTP_PASSWORD", "s3cret-pass-word")
    config = parse_config(GOOD, "alerts.yaml")
    assert config.community is not None
    assert (config.community.host, config.community.port) == ("127.0.0.1", 8080)
    assert config.community.limits.alerts_per_member_per_day == 50
    assert "s3cret-pass-word" in config.secrets  # masked wherever the log could show it
    bare = parse_config("community: {name: G, public_url: 'https://a.example'}\n", "a.yaml")
    assert bare.community is not None and bare.community.limits.searches_per_member == 10
    assert bare.community.signup == "open" and bare.community.mail is None
    assert parse_config("searches: []\n", "a.yaml").community is None


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("  signup: sometimes", "alerts.yaml:3: community.signup: 'sometimes' is not open, off"),
        ("  signup: invite:abc", "alerts.yaml:3: community.signup: 'invite:abc' is not open"),
        ("  listen: 8080", "alerts.yaml:3: community.listen: 8080 is not HOST:PORT"),
        (
            "  mail: slack://T1/B2/C3",
            "alerts.yaml:3: community.mail: give a mailto:// or mailtos://",
        ),
        (
            "  publik_url: x",
            "alerts.yaml:3: community.publik_url: unknown key 'publik_url' — "
            "did you mean 'public_url'?",
        ),
        (
            "  limits: {searches_per_member: 0}",
            "alerts.yaml:3: community.limits.searches_per_member: "
            "Input should be greater than or equal to 1",
        ),
        ("  limits: {searches: 3}", "alerts.yaml:3: community.limits.searches: unknown key"),
    ],
)
def test_a_mistake_names_file_line_and_field(line: str, expected: str) -> None:
    text = f"community:\n  name: G\n{line}\n  public_url: https://a.example\n"
    if "public_url" in line:
        text = f"community:\n  name: G\n{line}\n"
    assert error_of(text).startswith(expected)


def test_a_public_url_with_a_query_or_not_http_is_refused() -> None:
    for url in ("ftp://a.example", "https://a.example/?x=1", "alerts.example.org"):
        text = f"community:\n  name: G\n  public_url: '{url}'\n"
        assert error_of(text).startswith("alerts.yaml:3: community.public_url:"), url


def test_a_name_with_a_line_break_cannot_reach_a_subject() -> None:
    text = 'community:\n  name: "Guild\\r\\nBcc: x@example.org"\n  public_url: https://a.example\n'
    assert "line break" in error_of(text)


def test_init_shows_the_section_commented_out_and_it_validates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_cli: RunCli
) -> None:
    example = (Path(__file__).parent.parent / "alertd" / "alerts.example.yaml").read_text()
    block = re.search(r"^#   community:\n(?:#     .*\n)+", example, re.M)
    assert block is not None
    section = "".join(line[4:] + "\n" for line in block.group(0).splitlines())
    monkeypatch.setenv("SMTP_PASSWORD", "placeholder-value")
    monkeypatch.setenv("COMMUNITY_BOT_TOKEN", "123456789:placeholder-token-0123456789")
    path = tmp_path / "alerts.yaml"
    path.write_text(section + f"state_dir: {tmp_path / 'state'}\nsearches: []\n")
    result = run_cli("validate", "-c", path)
    assert result.exit_code == 0, result.output
    bad = path.read_text().replace("signup: open", "signup: sometimes")
    path.write_text(bad)
    result = run_cli("validate", "-c", path)
    assert result.exit_code == 2
    assert f"{path}:5: community.signup:" in result.output


def test_a_reload_keeps_the_community_section_until_a_restart() -> None:
    from alertd.daemon import keep_restart_settings

    old = parse_config("community: {name: A, public_url: 'https://a.example'}\n", "a.yaml")
    new = parse_config("community: {name: B, public_url: 'https://b.example'}\n", "a.yaml")
    merged, kept = keep_restart_settings(old, new)
    assert kept == ["community"]
    assert merged.community == old.community  # the page serves what it started with
