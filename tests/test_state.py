"""The state is never silently reset, never shared by two daemons, never stuck on one row."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import resource
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from alertd.cli import cli
from alertd.errors import StoreError
from alertd.market import Market
from alertd.store import Store
from tests.conftest import ALERTD, RunCli, WriteConfig
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
        with pytest.raises(StoreError, match=rf"in use by alertd \(pid {os.getpid()}\)"):
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
    an_hour_ago = time.time() - 3600
    os.utime(stale, (an_hour_ago, an_hour_ago))
    other = state_dir / "notes.txt"
    other.write_text("the operator's")
    # The bot's thread (or the page's process) writing members.json this very moment:
    # its temp file must still be there when it renames it into place.
    writing = state_dir / ".alertd-members-in-progress.tmp"
    writing.write_text("the first half of a members write")
    with Store.open(state_dir):
        pass
    assert not stale.exists() and other.exists()
    assert writing.exists()


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


def test_a_full_disk_at_the_very_first_start_is_one_line_and_the_fix(
    write_config: WriteConfig, state_dir: Path
) -> None:
    config = write_config("searches:\n  - name: all\n")

    def full_disk() -> None:  # not one byte may be written: the lock's pid is the first write
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))

    result = subprocess.run(
        [*ALERTD, "once", "-c", str(config)],
        capture_output=True,
        text=True,
        preexec_fn=full_disk,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"Error: cannot write {state_dir / 'alertd.lock'}: File too large; "
        "free some space on that disk (or raise the quota), then start alertd again"
    ]


@contextlib.contextmanager
def as_another_user(state_dir: Path, *, given_the_directory: bool) -> Iterator[None]:
    """This process, unable to read or write what is in ``state_dir``: as another user
    when the tests run as root (root reads anything), by taking the permissions away
    otherwise. ``given_the_directory``: the directory itself (and the lock file) was
    handed over, its state files were not (a chown without -R)."""
    if os.geteuid() == 0:  # the other user may reach the config, not read the state
        opened = {path: path.stat().st_mode for path in state_dir.parents if path != Path("/")}
        for path, mode in opened.items():
            path.chmod(mode | 0o005)
        if given_the_directory:
            for path in (state_dir, state_dir / "alertd.lock"):
                os.chown(path, 65534, 65534)
        os.setegid(65534)
        os.seteuid(65534)
        try:
            yield
        finally:
            os.seteuid(0)
            os.setegid(0)
            for path, mode in opened.items():
                path.chmod(mode)
        return
    modes = {path: path.stat().st_mode for path in [state_dir, *state_dir.iterdir()]}
    for path in modes:
        if given_the_directory and path.name in (state_dir.name, "alertd.lock"):
            continue
        path.chmod(0o500 if path == state_dir else 0)
    try:
        yield
    finally:
        for path, mode in modes.items():
            path.chmod(mode)


@pytest.mark.parametrize("given_the_directory", [False, True], ids=["nothing", "directory"])
def test_a_state_made_by_another_user_is_one_line_naming_the_fix(
    write_config: WriteConfig,
    run_cli: RunCli,
    webhook: WebhookCollector,
    state_dir: Path,
    given_the_directory: bool,
) -> None:
    config = primed(write_config, run_cli, webhook)  # as the user who made it (root, say)
    config.chmod(0o644)
    before = {path.name: path.read_bytes() for path in state_dir.iterdir()}
    with as_another_user(state_dir, given_the_directory=given_the_directory):
        result = CliRunner().invoke(cli, ["once", "-c", str(config)])
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)  # an exit, not a traceback
    (line,) = result.output.strip().splitlines()
    assert "Permission denied" in line and str(state_dir) in line
    assert "writable by the user alertd runs as" in line and "chown -R" in line
    assert {path.name: path.read_bytes() for path in state_dir.iterdir()} == before


DAMAGE = {
    "outbox emptied": ("outbox.json", "{}"),
    "outbox foreign": ("outbox.json", '{"foo": {"1": {"bar": 2}}}'),
    "outbox deleted": ("outbox.json", None),
    "searches emptied": ("searches.json", "{}"),
}


@pytest.mark.parametrize("damage", DAMAGE.values(), ids=DAMAGE.keys())
def test_a_state_file_emptied_or_deleted_stops_alertd(
    write_config: WriteConfig,
    run_cli: RunCli,
    webhook: WebhookCollector,
    market: Market,
    state_dir: Path,
    damage: tuple[str, str | None],
) -> None:
    config = owe_two(write_config, run_cli, webhook, market)
    name, text = damage
    if text is None:
        (state_dir / name).unlink()
    else:
        (state_dir / name).write_text(text)
    result = run_cli("once", "-c", config)
    assert result.exit_code == 1
    (line,) = result.output.strip().splitlines()
    assert f"state file {state_dir / name}" in line and "will not start over silently" in line
    assert webhook.received == []  # not re-primed, not lost: stopped
    assert run_cli("once", "-c", config).exit_code == 1  # and it stays stopped


def test_a_new_state_writes_every_file_at_once_so_a_lost_one_is_noticed(state_dir: Path) -> None:
    with Store.open(state_dir):
        pass
    (state_dir / "done.json").unlink()  # nothing was ever delivered: still a loss to notice
    with pytest.raises(StoreError, match=r"done\.json is missing"):
        Store.open(state_dir)


def test_a_state_an_older_alertd_wrote_is_read_then_written_whole(
    write_config: WriteConfig, run_cli: RunCli, webhook: WebhookCollector, state_dir: Path
) -> None:
    config = primed(write_config, run_cli, webhook)
    # What alertd 0.2 left: no list of files, and no file (or table) it had nothing for.
    feed = json.loads((state_dir / "feed.json").read_text())
    feed["meta"] = {"1": {"schema_version": 2}}
    (state_dir / "feed.json").write_text(json.dumps(feed))
    (state_dir / "outbox.json").unlink()
    (state_dir / "done.json").write_text("{}")
    assert run_cli("once", "-c", config).exit_code == 0
    (state_dir / "outbox.json").unlink()  # from now on, a lost file is noticed
    result = run_cli("once", "-c", config)
    assert result.exit_code == 1 and "outbox.json is missing" in result.output


READERS = {"status": ("status",), "dry run": ("once", "--dry-run")}
UNREADABLE = {
    "journal of random bytes": ("journal.jsonl", os.urandom(200).replace(b"\n", b"\xff")),
    "a 5,000-digit number": ("feed.json", b'{"meta": {"1": {"schema_version": 1' + b"0" * 5000),
    "100,000 nested lists": ("feed.json", b"[" * 100_000),
}


@pytest.mark.parametrize("command", READERS.values(), ids=READERS.keys())
@pytest.mark.parametrize("damage", UNREADABLE.values(), ids=UNREADABLE.keys())
def test_every_command_that_reads_the_state_says_what_is_damaged_in_one_line(
    write_config: WriteConfig,
    run_cli: RunCli,
    webhook: WebhookCollector,
    state_dir: Path,
    command: tuple[str, ...],
    damage: tuple[str, bytes],
) -> None:
    config = primed(write_config, run_cli, webhook)
    name, data = damage
    (state_dir / name).write_bytes(data)
    result = run_cli(*command, "-c", config)
    assert result.exit_code == 1
    (line,) = result.output.strip().splitlines()
    assert line.startswith("Error: ") and name in line


def test_a_broken_state_is_moved_aside_when_the_operator_opts_in(
    write_config: WriteConfig,
    run_cli: RunCli,
    webhook: WebhookCollector,
    market: Market,
    state_dir: Path,
) -> None:
    config = owe_two(write_config, run_cli, webhook, market)
    (state_dir / "outbox.json").write_text("{}")
    config.write_text("broken_state: move_aside\n" + config.read_text())
    market.add_job(title="Listed before the new start: primed, not sent")
    result = run_cli("once", "-c", config)
    assert result.exit_code == 0, result.output
    (folder,) = state_dir.glob("broken-*")
    assert (folder / "outbox.json").read_text() == "{}"  # kept for the operator
    assert {"feed.json", "searches.json", "done.json"} <= {p.name for p in folder.iterdir()}
    (warning,) = [line for line in result.output.splitlines() if " WARNING " in line]
    assert str(folder) in warning and "re-primes silently" in warning
    assert "owed are lost" in warning
    assert webhook.received == []  # a fresh start: everything listed now primes silently
    assert json.loads((state_dir / "outbox.json").read_text()) == {"rows": {}, "jobs": {}}
