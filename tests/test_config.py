"""Config mistakes: exit status 2, one line naming file, line and field; nothing sent."""

from __future__ import annotations

from pathlib import Path

import pytest

from alertd.config import load_config, parse_config
from alertd.errors import ConfigError
from alertd.settings import parse_duration
from tests.conftest import RunCli

SLACK = "slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ"


def error_of(text: str, source: str = "alerts.yaml") -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, source)
    return caught.value


def test_yaml_syntax_error_names_file_and_line() -> None:
    err = error_of("searches:\n  - name: a\n    q: [unclosed\n")
    assert err.source == "alerts.yaml"
    assert err.line is not None and err.line >= 3
    assert "YAML syntax error" in err.describe()


def test_unknown_key_suggests_nearest_known_key() -> None:
    err = error_of("poll_intervall: 5m\nsearches:\n  - name: a\n")
    assert err.line == 1
    assert err.field == "poll_intervall"
    assert "did you mean 'poll_interval'" in err.describe()


def test_unknown_search_key_suggests_the_api_spelling() -> None:
    err = error_of("searches:\n  - name: a\n    pay_type: PAY_PER_HOUR\n")
    assert err.describe().startswith("alerts.yaml:3: searches[0].pay_type: unknown key")
    assert "did you mean 'payType'" in err.message


def test_bad_pay_type_lists_valid_ones() -> None:
    err = error_of("searches:\n  - name: a\n  - name: b\n    payType: PAY_PER_HOURS\n")
    assert err.line == 4
    assert err.field == "searches[1].payType"
    assert "PAY_PER_HOUR, FIXED_PRICE, PAY_PER_LABEL" in err.message
    assert "did you mean 'PAY_PER_HOUR'" in err.message


def test_unknown_channel_name_is_located_and_suggested() -> None:
    text = f"channels:\n  team-slack: {SLACK}\nsearches:\n  - name: a\n    notify: [team-slak]\n"
    err = error_of(text)
    assert err.line == 5
    assert err.field == "searches[0].notify[0]"
    assert "unknown channel 'team-slak'" in err.message
    assert "did you mean 'team-slack'" in err.message


def test_unparseable_apprise_url_is_rejected() -> None:
    err = error_of("channels:\n  x: nosuchservice://abc\nsearches:\n  - name: a\n    notify: [x]\n")
    assert err.line == 2
    assert err.field == "channels.x[0]"
    assert "apprise cannot use" in err.message


def test_missing_env_var_is_an_error_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLACK_TOKEN", raising=False)
    text = "channels:\n  team: slack://${SLACK_TOKEN}\nsearches:\n  - name: a\n"
    err = error_of(text)
    assert err.line == 2
    assert "SLACK_TOKEN is not set" in err.message


def test_env_var_is_substituted_and_kept_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_TOKEN", "T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ")
    text = "channels:\n  team: slack://${SLACK_TOKEN}\nsearches:\n  - name: a\n    notify: [team]\n"
    config = parse_config(text, "alerts.yaml")
    (target,) = config.searches[0].targets
    assert target.url == SLACK
    assert target.label == "team"
    assert "TIiajkdnlazkcOXrIdevi7FQ" in config.secrets


def test_duplicate_search_name_points_at_the_second() -> None:
    err = error_of("searches:\n  - name: audio\n  - name: audio\n")
    assert err.line == 3
    assert "duplicate search name 'audio'" in err.message


def test_duplicate_yaml_key_is_not_silently_overwritten() -> None:
    err = error_of("poll_interval: 60\npoll_interval: 5\n")
    assert err.line == 2
    assert "appears twice" in err.message


def test_requests_per_minute_cannot_exceed_the_api_limit() -> None:
    err = error_of("requests_per_minute: 500\n")
    assert err.field == "requests_per_minute"
    assert err.line == 1


def test_environment_overrides_file_and_errors_name_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ALERTD_POLL_INTERVAL", "90s")
    monkeypatch.setenv("ALERTD_REQUESTS_PER_MINUTE", "30")
    config = parse_config("poll_interval: 5m\nrequests_per_minute: 60\n", "a.yaml")
    assert config.poll_interval == 90
    assert config.requests_per_minute == 30
    monkeypatch.setenv("ALERTD_REQUESTS_PER_MINUTE", "999")
    err = error_of("requests_per_minute: 60\n")
    assert err.source == "environment variable ALERTD_REQUESTS_PER_MINUTE"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [(90, 90.0), ("90", 90.0), ("45s", 45.0), ("5m", 300.0), ("1h30m", 5400.0), ("0.5", 0.5)],
)
def test_poll_interval_takes_seconds_or_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "0", "-5", "5 minutes"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_infinite_poll_interval_is_refused() -> None:
    err = error_of("poll_interval: .inf\n")
    assert err.field == "poll_interval"
    assert "at most 7 days" in err.message
    assert not err.message.startswith("Value error")


def test_search_without_targets_prints_to_stdout() -> None:
    config = parse_config("searches:\n  - name: a\n    q: audio\n", "a.yaml")
    assert [t.key for t in config.searches[0].targets] == ["stdout"]


def test_channel_with_several_urls_and_shared_targets_are_deduplicated() -> None:
    text = (
        "channels:\n"
        f"  team: [{SLACK}, 'discord://4174216298/JHMHI8qBe7bk2ZwO5U711o3dV_js']\n"
        "searches:\n"
        f"  - name: a\n    notify: [team, '{SLACK}']\n"
    )
    config = parse_config(text, "a.yaml")
    assert len(config.searches[0].targets) == 2


def test_missing_file_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "nope.yaml")
    assert f"`alertd init {tmp_path / 'nope.yaml'}`" in caught.value.describe()


def test_cli_exits_2_with_one_line_and_no_traceback(tmp_path: Path, run_cli: RunCli) -> None:
    path = tmp_path / "alerts.yaml"
    path.write_text("searches:\n  - name: a\n    payType: HOURLY\n", encoding="utf-8")
    result = run_cli("once", "--config", path)
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines == [
        f"Error: {path}:3: searches[0].payType: 'HOURLY' is not a pay type; "
        "use one of PAY_PER_HOUR, FIXED_PRICE, PAY_PER_LABEL"
    ]


def test_example_config_validates(monkeypatch: pytest.MonkeyPatch, run_cli: RunCli) -> None:
    example = Path(__file__).parent.parent / "alertd" / "alerts.example.yaml"
    for name in ("SLACK_WEBHOOK", "TELEGRAM_BOT_TOKEN", "SMTP_PASSWORD", "DISCORD_WEBHOOK"):
        monkeypatch.setenv(name, "placeholder-value")
    monkeypatch.setenv("SLACK_WEBHOOK", "T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ")
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "123456789:ABCdefGhIJKlmnOPqrSTUvwxYZ")
    monkeypatch.setenv("DISCORD_WEBHOOK", "4174216298/JHMHI8qBe7bk2ZwO5U711o3dV_js")
    result = run_cli("validate", "--config", example)
    assert result.exit_code == 0, result.output
    assert "is valid" in result.output


def test_an_alias_bomb_is_indexed_once_not_expanded() -> None:
    from alertd.yamlsource import parse_yaml

    levels = ["a0: &a0 [x, x, x, x, x, x, x, x]"]
    for i in range(1, 5):  # 8**5 values in all: under the bound, which a sixth level passes
        levels.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 8) + "]")
    doc = parse_yaml("\n".join(levels) + "\n", "bomb.yaml")
    assert len(doc.lines) < 200  # 8**5 paths if every alias were walked


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("searches:\n  - name: a\n    notify: ['${MYTOK}']\n", "unknown channel '${MYTOK}'"),
        ("poll_interval: '${MYTOK}'\nsearches:\n  - name: a\n", "poll_interval: '${MYTOK}'"),
        ("timezone: '${MYTOK}'\nsearches:\n  - name: a\n", "unknown time zone '${MYTOK}'"),
        ("api_url: '${MYTOK}'\nsearches:\n  - name: a\n", "'${MYTOK}' is not an http(s) URL"),
        ("searches:\n  - name: a\n    payType: '${MYTOK}'\n", "'${MYTOK}' is not a pay type"),
        ("searches:\n  - name: '${MYTOK}'\n  - name: '${MYTOK}'\n", "name '${MYTOK}'"),
    ],
)
@pytest.mark.parametrize(
    "token",
    [
        "s3cr3t-Token-9f2b",
        "xoxb-1234567890-abcdefghijklmnopqrstuvwxyz0123",  # long: messages cut it short
        "se\\cr\"et'tok9",  # escaped when the message quotes it
    ],
    ids=["plain", "long", "quotes"],
)
def test_a_config_error_names_the_variable_never_its_value(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    run_cli: RunCli,
    body: str,
    expected: str,
    token: str,
) -> None:
    monkeypatch.setenv("MYTOK", token)
    config = tmp_path / "alerts.yaml"
    config.write_text(body)
    result = run_cli("validate", "-c", config)
    assert result.exit_code == 2
    assert expected in result.output
    for shown in (token, repr(token)[1:-1]):
        assert shown[:8] not in result.output, result.output


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('api_url: "http://[::1"\n', "api_url: 'http://[::1' is not an http(s) URL"),
        ('api_url: "http://host:notaport"\n', "is not an http(s) URL"),
        ('state_dir: "~nosuchuser-alertd/x"\n', "state_dir: '~nosuchuser-alertd/x'"),
        ('state_dir: ""\n', "state_dir: is empty"),
        ('state_dir: "/tmp/a\\0b"\n', "holds a NUL character"),
        ('api_url: "http://exa\u00a0mple.com"\n', "has a space or a character an URL cannot"),
        ('api_url: "http://h/\\x7f"\n', "has a space or a character an URL cannot"),
        ("requests_per_minute: true\n", "requests_per_minute: expected a whole number"),
        ("poll_interval: '" + " " * 1000 + "x'\n", "poll_interval: 'x' is not a duration"),
        ("searches: &a [*a]\n", "inside the value it names (&name) repeats forever"),
        ("searches:\n  - name: a\n    q: " + "[" * 2000 + "]" * 2000 + "\n", ": "),
    ],
)
def test_operator_mistakes_are_one_line_and_exit_2(
    tmp_path: Path, run_cli: RunCli, body: str, expected: str
) -> None:
    config = tmp_path / "alerts.yaml"
    config.write_text(body + ("" if "searches" in body else "searches:\n  - name: a\n"))
    result = run_cli("validate", "-c", config)
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_validate_checks_the_state_directory_run_will_need(tmp_path: Path, run_cli: RunCli) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    config = tmp_path / "alerts.yaml"
    config.write_text(f"state_dir: {blocker / 'state'}\nsearches:\n  - name: a\n")
    result = run_cli("validate", "-c", config)
    assert result.exit_code == 2
    assert f"{config}:1: state_dir: {blocker} is a file, not a directory" in result.output
    config.write_text(f"state_dir: {tmp_path / 'new' / 'state'}\nsearches:\n  - name: a\n")
    assert run_cli("validate", "-c", config).exit_code == 0  # run will make it
