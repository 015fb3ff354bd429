"""The state is never silently reset, never shared by two daemons, never stuck on one row."""

from __future__ import annotations

import errno
import fcntl
import json
import time
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


def owe_two(
    write_config: WriteConfig, run_cli: RunCli, webhook: WebhookCollector, market: Market
) -> Path:
    config = write_config(
        f"retry_schedule: [0.1]\nsearches:\n  - name: all\n    notify: ['{webhook.url}']\n"
    )
    run_cli("once", "-c", config)
    market.add_job(title="Owed A")
    market.add_job(title="Owed B")
    webhook.up.clear()
    run_cli("once", "-c", config)
    webhook.up.set()
    time.sleep(0.2)  # both are due again
    return config


def test_a_row_whose_job_record_is_unreadable_is_still_delivered(
    write_config: WriteConfig,
    run_cli: RunCli,
    webhook: WebhookCollector,
    market: Market,
    state_dir: Path,
) -> None:
    config = owe_two(write_config, run_cli, webhook, market)
    path = state_dir / "outbox.json"
    outbox = json.loads(path.read_text())
    next(iter(outbox["jobs"].values()))["pay"]["bonus"] = 5  # a key this version lacks
    path.write_text(json.dumps(outbox))
    run_cli("once", "-c", config)
    assert len(webhook.received) == 2  # the row goes out by its stored title


def test_an_unreadable_number_in_a_row_is_set_aside_not_a_crash(
    write_config: WriteConfig,
    run_cli: RunCli,
    webhook: WebhookCollector,
    market: Market,
    state_dir: Path,
) -> None:
    config = owe_two(write_config, run_cli, webhook, market)
    path = state_dir / "outbox.json"
    path.write_text(path.read_text().replace('"attempts":1', '"attempts":1e999', 1))
    result = run_cli("once", "-c", config)
    assert "Traceback" not in result.output and "set aside" in result.output
    assert len(webhook.received) == 1  # the other one


def test_a_lock_error_that_is_not_contention_is_not_called_in_use(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_locks(fd: int, op: int) -> None:  # a file system without flock
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with pytest.raises(StoreError) as caught:
        Store.open(state_dir)
    assert "in use by alertd" not in str(caught.value)
    assert "No locks available" in str(caught.value)


def test_a_dangling_symlinked_state_file_is_not_a_new_state(
    write_config: WriteConfig,
    run_cli: RunCli,
    webhook: WebhookCollector,
    market: Market,
    state_dir: Path,
    tmp_path: Path,
) -> None:
    config = owe_two(write_config, run_cli, webhook, market)
    path = state_dir / "outbox.json"
    volume = tmp_path / "volume"
    volume.mkdir()
    path.rename(volume / "outbox.json")
    path.symlink_to(volume / "outbox.json")
    (volume / "outbox.json").rename(volume / "elsewhere")  # the volume is not mounted
    result = run_cli("once", "-c", config)
    assert result.exit_code == 1 and "which is missing" in result.output
    assert webhook.received == []
