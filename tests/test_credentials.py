"""Secrets from systemd's LoadCredential=: ``${NAME}`` reads $CREDENTIALS_DIRECTORY/NAME
when the environment has no NAME, is masked like any secret, and a missing one is a
one-line config error (exit 2) that names it and shows no value."""

from __future__ import annotations

from pathlib import Path

import pytest

from alertd.config import parse_config
from alertd.errors import ConfigError
from tests.conftest import RunCli, WriteConfig
from tests.webhook import WebhookCollector

SECRET = "Xq7-very-secret-token-42"


@pytest.fixture
def credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A credentials directory, as systemd makes one, in $CREDENTIALS_DIRECTORY."""
    folder = tmp_path / "credentials"
    folder.mkdir()
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(folder))
    return folder


def test_a_credential_fills_the_reference_and_alerts_go_out(
    credentials: Path,
    write_config: WriteConfig,
    webhook: WebhookCollector,
    run_cli: RunCli,
    market: object,
) -> None:
    # systemd's credential files often end with the newline `echo` wrote: not part of it.
    (credentials / "TEAM_HOOK").write_text(webhook.url + "\n")
    config = write_config("searches:\n  - name: all\n    notify: ['${TEAM_HOOK}']\n")
    result = run_cli("test-notify", "-c", config)
    assert result.exit_code == 0, result.output
    assert len(webhook.received) == 1


def test_a_folder_of_credentials_loaded_as_alertd_works_too(credentials: Path) -> None:
    # LoadCredential=alertd:/etc/alertd/credentials names the file HOOK "alertd_HOOK".
    (credentials / "alertd_HOOK").write_text("json://127.0.0.1:9/from-folder\n")
    config = parse_config("searches:\n  - name: a\n    notify: ['${HOOK}']\n", "alerts.yaml")
    assert config.searches[0].targets[0].url == "json://127.0.0.1:9/from-folder"


def test_the_environment_wins_over_a_credential(
    credentials: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (credentials / "HOOK").write_text("json://127.0.0.1:9/from-credential")
    monkeypatch.setenv("HOOK", "json://127.0.0.1:9/from-environment")
    config = parse_config("searches:\n  - name: a\n    notify: ['${HOOK}']\n", "alerts.yaml")
    assert config.searches[0].targets[0].url.endswith("/from-environment")


def test_a_missing_credential_exits_2_naming_it(
    credentials: Path, write_config: WriteConfig, run_cli: RunCli
) -> None:
    (credentials / "OTHER").write_text(SECRET)
    config = write_config("searches:\n  - name: all\n    notify: ['${TEAM_HOOK}']\n")
    result = run_cli("validate", "-c", config)
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert "TEAM_HOOK" in line and "LoadCredential=" in line
    assert SECRET not in result.output


def test_a_credential_value_in_an_error_is_named_never_shown(credentials: Path) -> None:
    (credentials / "POLL").write_text(SECRET)
    with pytest.raises(ConfigError) as caught:
        parse_config("poll_interval: ${POLL}\nsearches:\n  - name: a\n", "alerts.yaml")
    assert "${POLL}" in caught.value.describe()
    assert SECRET[:8] not in caught.value.describe()


def test_an_unreadable_credential_is_a_config_error_naming_it(credentials: Path) -> None:
    (credentials / "HOOK").write_bytes(b"\xff\xfe not text")
    with pytest.raises(ConfigError) as caught:
        parse_config("searches:\n  - name: a\n    notify: ['${HOOK}']\n", "alerts.yaml")
    assert "credential HOOK" in caught.value.describe()
    assert caught.value.line == 3
