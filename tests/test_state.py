"""The state is never silently reset, never shared by two daemons, never stuck on one row."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alertd.errors import StoreError
from alertd.market import Market
from alertd.store import Store
from tests.conftest import RunCli, WriteConfig
from tests.webhook import WebhookCollector


def primed(write_config: WriteConfig, run_cli: RunCli, webhook: WebhookCollector) -> Path:
    config = write_config(f"searches:\n  - name: all\n    notify: ['{webhook.url}']\n")
    assert run_cli("once", "-c", config).exit_code == 0
    return config


@pytest.mark.parametrize("blank", ["", "  \n"])
def test_an_empty_state_file_stops_alertd_instead_of_starting_over(
    write_config: WriteConfig,
    run_cli: RunCli,
    webhook: WebhookCollector,
    market: Market,
    state_dir: Path,
    blank: str,
) -> None:
    config = primed(write_config, run_cli, webhook)
    (state_dir / "searches.json").write_text(blank)
    market.add_job(title="Would alert if the search re-primed")
    result = run_cli("once", "-c", config)
    assert result.exit_code == 1
    assert "searches.json is empty" in result.output and "move it aside" in result.output
    assert (state_dir / "searches.json").read_text() == blank
    assert webhook.received == []


def test_a_malformed_row_is_set_aside_and_the_others_still_go(
    write_config: WriteConfig,
    run_cli: RunCli,
    webhook: WebhookCollector,
    market: Market,
    state_dir: Path,
) -> None:
    config = primed(write_config, run_cli, webhook)
    market.add_job(title="Owed A")
    market.add_job(title="Owed B")
    webhook.up.clear()
    assert run_cli("once", "-c", config).exit_code == 1  # both owed
    outbox = json.loads((state_dir / "outbox.json").read_text())
    first = next(iter(outbox["rows"]))
    del outbox["rows"][first]["target"]  # damaged by hand, or by a bug
    (state_dir / "outbox.json").write_text(json.dumps(outbox))
    webhook.up.set()
    result = run_cli("once", "-c", config)
    assert result.exit_code == 0, result.output
    assert len(webhook.received) == 1
    status = run_cli("status", "-c", config)
    assert "1 malformed rows set aside in" in status.output
    kept = json.loads((state_dir / "outbox.json").read_text())["quarantine"]
    assert next(iter(kept.values()))["row"]["job_id"] == outbox["rows"][first]["job_id"]


def test_deleting_the_lock_file_does_not_let_a_second_alertd_in(state_dir: Path) -> None:
    with Store.open(state_dir):
        (state_dir / "alertd.lock").unlink()
        with pytest.raises(StoreError, match="in use by alertd"):
            Store.open(state_dir)


def test_a_symlinked_state_file_stays_a_symlink(
    write_config: WriteConfig,
    run_cli: RunCli,
    webhook: WebhookCollector,
    tmp_path: Path,
    state_dir: Path,
    market: Market,
) -> None:
    config = primed(write_config, run_cli, webhook)
    elsewhere = tmp_path / "elsewhere.json"
    (state_dir / "feed.json").rename(elsewhere)
    (state_dir / "feed.json").symlink_to(elsewhere)
    before = elsewhere.read_text()
    market.add_job(title="Moves the feed position")
    run_cli("once", "-c", config)
    assert (state_dir / "feed.json").is_symlink()
    assert elsewhere.read_text() != before  # written through the link


def test_temp_files_a_kill_left_behind_are_cleaned_at_start(state_dir: Path) -> None:
    state_dir.mkdir(parents=True)
    stale = state_dir / ".alertd-abc123.tmp"
    stale.write_text("half a write")
    other = state_dir / "notes.txt"
    other.write_text("the operator's")
    with Store.open(state_dir):
        pass
    assert not stale.exists() and other.exists()


def test_a_state_directory_that_cannot_be_made_is_one_clear_line(
    write_config: WriteConfig, run_cli: RunCli, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    config = write_config(f"state_dir: {blocker / 'state'}\nsearches:\n  - name: all\n")
    result = run_cli("once", "-c", config)
    assert result.exit_code == 1
    assert f"cannot use state directory {blocker / 'state'}" in result.output
    assert "Traceback" not in result.output
