"""``${VAR}``: only where the operator allows it, and every missing one named at once.

An included file (a member's) gets no ``${VAR}`` unless the main file's ``include:``
entry lists the names its files may use; the same holds for systemd credentials. The
unedited ``alertd init`` example names all four of its missing variables in one error.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from alertd.config import load_config
from alertd.errors import ConfigError
from tests.conftest import ALERTD, RunCli, WriteConfig
from tests.webhook import WebhookCollector

TOKEN = "xoxb-operators-own-token-1234"
EXAMPLE_VARIABLES = ("SLACK_WEBHOOK", "TELEGRAM_BOT_TOKEN", "SMTP_PASSWORD", "DISCORD_WEBHOOK")


def member_file(tmp_path: Path, webhook: WebhookCollector) -> Path:
    path = tmp_path / "members" / "mallory.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(
        "searches:\n  - name: everything\n"
        f"    notify: ['{webhook.url}?-leak=${{TEAM_SLACK_TOKEN}}']\n",
        encoding="utf-8",
    )
    return path


def test_an_included_file_cannot_read_the_operators_token(
    write_config: WriteConfig,
    run_cli: RunCli,
    webhook: WebhookCollector,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TEAM_SLACK_TOKEN", TOKEN)
    config = write_config(
        "include: members/*.yaml\nchannels:\n  team: 'slack://${TEAM_SLACK_TOKEN}'\n"
    )
    member = member_file(tmp_path, webhook)
    for command in (["validate"], ["once"]):
        result = run_cli(*command, "-c", config)
        assert result.exit_code == 2
        assert result.output.splitlines() == [
            f"Error: {member}:3: searches[0].notify[0]: ${{TEAM_SLACK_TOKEN}} is not allowed "
            "in this included file (allowed: none); the main config file allows it in its "
            "include: entry, e.g. - {files: members/*.yaml, variables: [TEAM_SLACK_TOKEN]}"
        ]
    assert webhook.received == []
    status = run_cli("status", "-c", config)  # without the secrets: still not allowed
    assert status.exit_code == 2 and "is not allowed" in status.output
    assert TOKEN not in status.output


def test_a_credential_is_no_more_open_to_an_included_file(
    write_config: WriteConfig,
    webhook: WebhookCollector,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "TEAM_SLACK_TOKEN").write_text(TOKEN + "\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    config = write_config("include: members/*.yaml\n")
    member = member_file(tmp_path, webhook)
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    assert (caught.value.source, caught.value.line) == (str(member), 3)
    assert "${TEAM_SLACK_TOKEN} is not allowed" in caught.value.message
    assert TOKEN not in caught.value.describe()

    config.write_text(
        config.read_text().replace(
            "include: members/*.yaml",
            "include:\n  - files: members/*.yaml\n    variables: [TEAM_SLACK_TOKEN]",
        )
    )
    loaded = load_config(config)
    assert TOKEN in loaded.secrets
    assert loaded.searches[0].targets[0].url.endswith(f"-leak={TOKEN}")


def test_the_main_file_allows_names_per_include_entry(
    write_config: WriteConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEAM_HOOK", "127.0.0.1/team-hook-path")
    monkeypatch.setenv("OTHER_HOOK", "127.0.0.1/other-hook-path")
    config = write_config(
        """\
        include:
          - members/*.yaml
          - files: [team/*.yaml]
            variables: TEAM_HOOK
        """
    )
    (tmp_path / "team").mkdir()
    (tmp_path / "members").mkdir()
    team = tmp_path / "team" / "t.yaml"
    team.write_text("searches:\n  - name: t\n    notify: ['json://${TEAM_HOOK}']\n")
    member = tmp_path / "members" / "m.yaml"
    member.write_text("searches:\n  - name: m\n    notify: ['json://${TEAM_HOOK}']\n")
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    assert caught.value.source == str(member)  # the team's name is the team files' only

    member.write_text("searches:\n  - name: m\n")
    team.write_text("searches:\n  - name: t\n    notify: ['json://${OTHER_HOOK}']\n")
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    assert caught.value.source == str(team)
    assert "${OTHER_HOOK} is not allowed in this included file (allowed: TEAM_HOOK)" in str(
        caught.value
    )
    assert "other-hook-path" not in str(caught.value)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("{files: a/*.yaml, variable: [X]}", "unknown key 'variable' — did you mean 'variables'?"),
        ("{files: a/*.yaml, variables: ['${X}']}", "'${X}' is not a variable name"),
        ("{variables: [X]}", "give the files as files: PATTERN"),
    ],
)
def test_a_wrong_include_entry_is_one_line(
    write_config: WriteConfig, entry: str, message: str
) -> None:
    config = write_config(f"include:\n  - {entry}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    assert caught.value.source == str(config) and message in caught.value.message


def test_the_unedited_example_names_its_four_missing_variables_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in EXAMPLE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    config = tmp_path / "alerts.yaml"
    subprocess.run([*ALERTD, "init", str(config)], check=True, capture_output=True, timeout=60)
    for command in (["validate"], ["once", "--dry-run"]):
        result = subprocess.run(
            [*ALERTD, *command, "-c", str(config)], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 2
        (line,) = result.stderr.splitlines()
        assert line.startswith(f"Error: {config}:")
        assert "4 variables are not set" in line
        for name in EXAMPLE_VARIABLES:
            assert f"${{{name}}} (line" in line


def test_missing_variables_of_every_file_in_one_error_never_a_value(
    write_config: WriteConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SET_ONE", "value-that-is-set-77")
    monkeypatch.delenv("GONE_A", raising=False)
    monkeypatch.delenv("GONE_B", raising=False)
    config = write_config(
        """\
        include: {files: members/*.yaml, variables: [GONE_B, SET_ONE]}
        channels:
          a: 'json://127.0.0.1/${GONE_A}'
          b: 'json://127.0.0.1/${SET_ONE}/${GONE_A}'
        """
    )
    member = tmp_path / "members" / "m.yaml"
    member.parent.mkdir()
    member.write_text("searches:\n  - name: m\n    notify: ['json://x/${GONE_B}/${SET_ONE}']\n")
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    error = caught.value
    assert (error.source, error.line) == (str(config), 7)
    assert "2 variables are not set: ${GONE_A} (lines 7, 8), ${GONE_B} (" in error.message
    assert f"({member}:3)" in error.message
    assert "value-that-is-set-77" not in error.describe()


def test_one_missing_variable_keeps_its_longer_advice(
    write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GONE_A", raising=False)
    config = write_config("channels:\n  a: 'json://127.0.0.1/${GONE_A}'\n")
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    assert caught.value.message.startswith("environment variable GONE_A is not set")
