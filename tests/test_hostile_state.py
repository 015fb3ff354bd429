"""Symbolic links planted in the state directory: alertd never writes through one. The
lock file and the journal refuse a link with one line; temp files are made fresh with
O_EXCL (a link in their place is never followed); a state file is followed only when
its link belongs to alertd's user or root (the operator moved it to another volume)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from alertd.market import Market
from tests.conftest import RunCli, StartDaemon, WriteConfig, wait_for
from tests.webhook import WebhookCollector

PRECIOUS = "the operator's file, which alertd must never touch\n"
STRANGER = 54321  # a uid that is neither root nor the one running the tests


@pytest.fixture
def precious(tmp_path: Path) -> Path:
    target = tmp_path / "precious.txt"
    target.write_text(PRECIOUS)
    return target


def config_for(write_config: WriteConfig, webhook: WebhookCollector) -> Path:
    return write_config(f"searches:\n  - name: all\n    notify: ['{webhook.url}']\n")


@pytest.mark.parametrize("name", ["alertd.lock", "journal.jsonl"])
def test_a_link_planted_as_the_lock_or_the_journal_is_one_line_and_never_written(
    write_config: WriteConfig,
    run_cli: RunCli,
    webhook: WebhookCollector,
    state_dir: Path,
    precious: Path,
    name: str,
) -> None:
    config = config_for(write_config, webhook)
    assert run_cli("once", "-c", config).exit_code == 0
    (state_dir / name).unlink(missing_ok=True)
    (state_dir / name).symlink_to(precious)
    result = run_cli("once", "-c", config)
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if "symbolic link" in line]
    assert len(lines) == 1 and name in lines[0] and "remove the link" in lines[0], result.output
    assert precious.read_text() == PRECIOUS
    assert (state_dir / name).is_symlink()


@pytest.mark.parametrize("name", ["heartbeat.tmp", "heartbeat.json"])
def test_a_link_planted_in_the_heartbeats_place_is_never_written_through(
    write_config: WriteConfig,
    webhook: WebhookCollector,
    start_daemon: StartDaemon,
    state_dir: Path,
    precious: Path,
    name: str,
) -> None:
    config = config_for(write_config, webhook)
    state_dir.mkdir(parents=True)
    (state_dir / name).symlink_to(precious)
    daemon = start_daemon(config)
    try:
        wait_for(lambda: not (state_dir / "heartbeat.json").is_symlink() and heartbeat(state_dir))
    finally:
        daemon.terminate()
        daemon.wait(timeout=15)
    assert precious.read_text() == PRECIOUS
    assert [p.name for p in state_dir.glob(".alertd-*.tmp")] == []


def heartbeat(state_dir: Path) -> bool:
    path = state_dir / "heartbeat.json"
    return path.exists() and '"cycles"' in path.read_text()


def test_a_state_file_linked_by_another_user_is_refused_in_one_line(
    write_config: WriteConfig,
    run_cli: RunCli,
    webhook: WebhookCollector,
    market: Market,
    state_dir: Path,
    precious: Path,
) -> None:
    config = config_for(write_config, webhook)
    assert run_cli("once", "-c", config).exit_code == 0
    feed = state_dir / "feed.json"
    precious.write_text(feed.read_text())  # a state alertd can read: only the write is judged
    planted = precious.read_text()
    feed.unlink()
    feed.symlink_to(precious)
    os.lchown(feed, STRANGER, STRANGER)
    market.add_job(title="Moves the feed position")
    result = run_cli("once", "-c", config)
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if "symbolic link" in line]
    assert len(lines) == 1 and "feed.json" in lines[0], result.output
    assert precious.read_text() == planted


def test_a_link_planted_as_a_temp_file_is_removed_not_followed(
    write_config: WriteConfig,
    run_cli: RunCli,
    webhook: WebhookCollector,
    state_dir: Path,
    precious: Path,
) -> None:
    config = config_for(write_config, webhook)
    assert run_cli("once", "-c", config).exit_code == 0
    planted = state_dir / ".alertd-planted.tmp"
    planted.symlink_to(precious)
    assert run_cli("once", "-c", config).exit_code == 0
    assert not planted.is_symlink() and precious.read_text() == PRECIOUS
