"""One request budget per state directory: every alertd process counts in one window.

The window is ``api-budget`` in the state directory (alertd/budget.py). Two
``SharedWindow`` objects on one file stand for two processes here (with one clock they
can share, moved by hand); the tests at the end run real ``alertd`` processes against
the stand-in, which refuses with 429 any request past its limit.
"""

from __future__ import annotations

import codecs
import contextlib
import fcntl
import logging
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from alertd import budget
from alertd.api import MAX_RATE_LIMITED_WAIT, OpenTrainClient, RateBudget
from alertd.budget import (
    BUDGET_FILE,
    BUSY_WAIT,
    FLIGHT_GRACE,
    LocalWindow,
    SharedWindow,
    open_window,
)
from alertd.cli import cli
from alertd.errors import ApiUnavailableError
from alertd.market import Market
from alertd.standin import StandInServer
from tests.conftest import ALERTD, RunCli, WriteConfig, wait_for

SPAN = 60.5


class Clock:
    """A monotonic clock that a test moves by hand (every 'process' reads the same)."""

    def __init__(self) -> None:
        self.now = time.monotonic()

    def __call__(self) -> float:
        return self.now


def two_processes(
    tmp_path: Path, longest: float = 30.0
) -> tuple[Clock, SharedWindow, SharedWindow]:
    clock = Clock()
    path = tmp_path / BUDGET_FILE
    return clock, SharedWindow(path, longest, clock), SharedWindow(path, longest, clock)


def test_a_second_process_waits_for_the_first_ones_slots(tmp_path: Path) -> None:
    clock, first, second = two_processes(tmp_path)
    for _ in range(3):
        assert first.take(3, SPAN) == (0.0, 0.0)
        clock.now += 1.0
        first.give_back()
    wait, _ = second.take(3, SPAN)
    assert wait == pytest.approx(SPAN - 2.0)  # the first of the three ended 2 s ago
    clock.now += wait
    assert second.take(3, SPAN)[0] == 0.0


def test_a_request_in_flight_elsewhere_holds_its_slot(tmp_path: Path) -> None:
    clock, first, second = two_processes(tmp_path)
    assert first.take(1, SPAN)[0] == 0.0
    clock.now += 20.0  # a slow answer: still on its way
    assert second.take(1, SPAN)[0] > 0
    first.give_back()
    wait, _ = second.take(1, SPAN)
    assert wait == pytest.approx(SPAN)  # counted from the end of the answer


def test_a_429_hold_is_every_process_s(tmp_path: Path) -> None:
    clock, first, second = two_processes(tmp_path)
    first.hold(30.0)
    assert second.take(100, SPAN) == (pytest.approx(30.0), pytest.approx(30.0))
    budget_ = RateBudget(100, clock=clock, window=second)
    second.hold(MAX_RATE_LIMITED_WAIT + 10)
    with pytest.raises(ApiUnavailableError, match="rate limited by the API for another"):
        budget_.acquire()


def test_a_killed_process_s_slot_ends_at_its_deadline(tmp_path: Path) -> None:
    """A real process takes a slot and is killed with SIGKILL before its answer: the
    slot holds until the request's deadline (+ grace) has passed, then ages out."""
    path = tmp_path / BUDGET_FILE
    code = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from alertd.budget import SharedWindow\n"
        "window = SharedWindow(Path(sys.argv[1]), 2.0)\n"
        "assert window.take(1, 60.5)[0] == 0\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    killed = subprocess.run([sys.executable, "-c", code, str(path)], timeout=60, check=False)
    assert killed.returncode == -signal.SIGKILL
    ahead = [0.0]
    other = SharedWindow(path, 30.0, lambda: time.monotonic() + ahead[0])
    assert other.take(1, SPAN)[0] > 0  # its slot is held: it may be on its way still
    ahead[0] = 2.0 + FLIGHT_GRACE + 1.0  # past its deadline: it ended then, at the latest
    wait, _ = other.take(1, SPAN)
    assert 0 < wait <= SPAN
    ahead[0] += SPAN  # and a minute later it is out of the window: nothing leaks
    assert other.take(1, SPAN)[0] == 0.0


def test_a_request_timeout_past_the_longest_hold_is_not_taken_for_damage(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``request_timeout: 1h`` is a valid setting: its slot in flight must not make the
    file look like one no process wrote (which cost every process a minute)."""
    path = tmp_path / BUDGET_FILE
    first, second = SharedWindow(path, 3600.0), SharedWindow(path, 30.0)
    assert first.take(5, SPAN)[0] == 0.0  # in flight, with an hour's deadline
    with caplog.at_level(logging.WARNING):
        assert second.take(5, SPAN)[0] == 0.0
    assert "unreadable" not in caplog.text


@pytest.mark.parametrize("damage", ["garbled", "torn", "empty-looking"])
def test_an_unreadable_window_counts_as_full_for_a_minute(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    clock, first, second = two_processes(tmp_path)
    assert first.take(5, SPAN)[0] == 0.0
    first.give_back()
    path = tmp_path / BUDGET_FILE
    data = path.read_bytes()
    broken = {
        "garbled": data[:40] + bytes([data[40] ^ 0xFF]) + data[41:],
        "torn": data[:-5],
        "empty-looking": b"\0" * len(data),
    }[damage]
    path.write_bytes(broken)
    with caplog.at_level(logging.WARNING):
        wait, _ = second.take(5, SPAN)
    assert wait == pytest.approx(SPAN)
    assert "unreadable" in caplog.text and "full for a minute" in caplog.text
    assert first.take(5, SPAN)[0] == pytest.approx(SPAN)  # written back: everyone waits
    clock.now += SPAN
    assert first.take(5, SPAN)[0] == 0.0


def test_the_tail_of_a_longer_state_is_ignored(tmp_path: Path) -> None:
    """A write that was killed between writing the new state and cutting the file to
    its length leaves the old tail: the state is read as written."""
    clock, first, second = two_processes(tmp_path)
    for _ in range(3):
        first.take(10, SPAN)
        first.give_back()
    path = tmp_path / BUDGET_FILE
    long = path.read_bytes()
    clock.now += SPAN  # all three age out: the next write is shorter
    first.take(10, SPAN)
    first.give_back()
    short = path.read_bytes()
    assert len(short) < len(long)
    path.write_bytes(short + long[len(short) :])
    assert second.take(1, SPAN)[0] == pytest.approx(SPAN)  # the one stamp, as written


@contextlib.contextmanager
def as_another_user(state_dir: Path) -> Iterator[None]:
    """This process as a user who can read the config but not write ``state_dir`` (an
    operator's shell beside the daemon's user): another uid when the tests run as root
    (root writes anything), the directory made read-only otherwise."""
    codecs.lookup("idna")  # imported now: the other user cannot read the standard library
    if os.geteuid() != 0:
        state_dir.chmod(0o500)
        try:
            yield
        finally:
            state_dir.chmod(0o700)
        return
    opened = {path: path.stat().st_mode for path in state_dir.parents if path != Path("/")}
    for path, mode in opened.items():
        path.chmod(mode | 0o005)
    os.setegid(65534)
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)
        for path, mode in opened.items():
            path.chmod(mode)


def test_a_state_dir_that_cannot_be_used_falls_back_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    theirs = tmp_path / "theirs"
    SharedWindow(theirs / BUDGET_FILE, 30.0).check()  # the daemon's user made it
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / BUDGET_FILE).symlink_to(tmp_path / "elsewhere")
    for state_dir, other_user in ((theirs, True), (linked, False)):
        caplog.clear()
        with (
            as_another_user(state_dir) if other_user else contextlib.nullcontext(),
            caplog.at_level(logging.WARNING),
        ):
            window = open_window(state_dir, 30.0)
        assert isinstance(window, LocalWindow)
        assert len(caplog.records) == 1
        assert "counts only its own requests" in caplog.text
    assert not (tmp_path / "elsewhere").exists()  # nothing written through the link


@pytest.mark.skipif(os.geteuid() != 0, reason="only root makes files for another user")
def test_a_window_root_makes_belongs_to_the_state_dir_s_owner(tmp_path: Path) -> None:
    """`sudo alertd preview` beside a daemon running as its own user: the file root
    creates is handed to the directory's owner, so the daemon can still open it."""
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    os.chown(state_dir, 65534, 65534)
    SharedWindow(state_dir / BUDGET_FILE, 30.0).check()
    owner = (state_dir / BUDGET_FILE).stat()
    assert (owner.st_uid, owner.st_gid) == (65534, 65534)


def test_no_state_dir_yet_is_no_one_to_share_with_and_is_not_made(tmp_path: Path) -> None:
    assert isinstance(open_window(tmp_path / "none", 30.0), LocalWindow)
    assert not (tmp_path / "none").exists()  # preview, facets: nothing recorded
    assert isinstance(open_window(tmp_path / "run", 30.0, create=True), SharedWindow)


def test_a_window_that_breaks_mid_run_goes_on_counting_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _, first, _ = two_processes(tmp_path)
    first.take(2, SPAN)
    first.give_back()
    path = tmp_path / BUDGET_FILE
    path.unlink()
    path.symlink_to(tmp_path / "elsewhere")
    with caplog.at_level(logging.WARNING):
        assert first.take(2, SPAN)[0] == 0.0  # the second of two: still fits
        first.give_back()
        assert first.take(2, SPAN)[0] > 0  # the third does not: what it knew is kept
    assert "cannot be used any more" in caplog.text
    assert len(caplog.records) == 1


def test_a_file_size_limit_is_a_fallback_not_a_minute_s_wait_each_time(tmp_path: Path) -> None:
    """Under ``ulimit -f`` a write is cut short: the process counts alone from then on,
    with one warning, instead of finding a torn file (full for a minute) at every turn."""
    code = (
        "import logging, sys, time\n"
        "from pathlib import Path\n"
        "from alertd.budget import SharedWindow\n"
        "logging.basicConfig()\n"
        "window = SharedWindow(Path(sys.argv[1]), 30.0)\n"
        "window.check()\n"
        "for _ in range(3):\n"
        "    assert window.take(5, 60.5)[0] == 0\n"
        "    window.give_back()\n"
        "assert window.fallback is not None\n"
    )

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (140, 140))  # an empty window fits

    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / BUDGET_FILE)],
        capture_output=True,
        text=True,
        timeout=30,
        preexec_fn=small_files,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("cannot be used any more") == 1, done.stderr


def test_a_lock_held_for_long_never_blocks(tmp_path: Path) -> None:
    """A process stopped (Ctrl-Z) while it held the lock: the others wait on their stop
    Event, a little at a time, instead of blocking in flock for good."""
    clock, first, _ = two_processes(tmp_path)
    first.check()
    assert first.take(5, SPAN)[0] == 0.0
    holder = os.open(tmp_path / BUDGET_FILE, os.O_RDWR)
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        first.give_back()  # gives up: the slot ends at its deadline instead
        assert first.take(5, SPAN) == (BUSY_WAIT, 0.0)
        SharedWindow(tmp_path / BUDGET_FILE, 30.0, clock).check()
    finally:
        os.close(holder)
    clock.now += 30.0 + FLIGHT_GRACE
    assert first.take(1, SPAN)[0] == pytest.approx(SPAN)  # it ended, at its deadline


def test_the_file_stays_small_and_a_request_locks_it_twice(tmp_path: Path) -> None:
    """At the API's 120 a minute: two locked reads and writes a request (its start and
    its end) and one for each wait, and the file never past 2 KB."""
    clock, first, _ = two_processes(tmp_path)
    waits = 0
    for _ in range(500):
        wait, _ = first.take(120, SPAN)
        if wait:
            waits += 1
            clock.now += wait
            assert first.take(120, SPAN)[0] == 0.0
        first.give_back()
        clock.now += 0.1
    assert waits > 0
    assert first.file_ops == 2 * 500 + waits
    assert (tmp_path / BUDGET_FILE).stat().st_size <= 2100  # 120 stamps: the API's cap


# -- real processes against the stand-in ------------------------------------------------

SCALE = 12.0  # the stand-in's minute and alertd's window: 5 real seconds
LIMIT = 4


def scaled_clock() -> float:
    return time.monotonic() * SCALE


def most_in_a_window(stamps: list[float], window: float = 60.0) -> int:
    """The most requests the stand-in saw in any window (its own clock's 60 s)."""
    ordered = sorted(stamps)
    return max((len([b for b in ordered if a <= b < a + window]) for a in ordered), default=0)


@pytest.fixture
def limited(market: Market) -> Iterator[StandInServer]:
    """The stand-in with LIMIT requests per (scaled) minute, edge cache off."""
    for index in range(30):
        market.add_job(title=f"Audio job {index}", category="Audio Annotation")
    server = StandInServer(market, cache_ttl=0, rate_limit=LIMIT)
    server.edge.clock = scaled_clock
    server.start()
    yield server
    server.stop()


def alertd_env() -> dict[str, str]:
    env = dict(os.environ)
    env["_ALERTD_BUDGET_WINDOW"] = str(60.0 / SCALE)
    return env


SEARCHES = """
searches:
  - name: audio
    category: Audio Annotation
  - name: german
    language: German
  - name: text
    q: audio
"""


@pytest.mark.slow
def test_run_once_preview_and_facets_together_never_pass_the_limit(
    limited: StandInServer, tmp_path: Path
) -> None:
    """`run`, and beside it `once --dry-run` in a tight loop and `preview` and `facets` in
    another, one state directory, for 20 s: never more than the limit in any window, no
    429."""
    config = tmp_path / "alerts.yaml"
    config.write_text(
        f"api_url: {limited.url}\nstate_dir: {tmp_path / 'state'}\npoll_interval: 2\n"
        f"requests_per_minute: {LIMIT}\nrequest_timeout: 2\n{SEARCHES}",
        encoding="utf-8",
    )
    env = alertd_env()
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env}
    daemon = subprocess.Popen([*ALERTD, "run", "-c", str(config)], **quiet)  # type: ignore[call-overload]
    # beside a running daemon: the others share the state dir it made (before there is
    # one, no alertd has used it, and each counts alone)
    wait_for(lambda: (tmp_path / "state" / BUDGET_FILE).exists(), timeout=20)
    loops = [
        [[*ALERTD, "once", "-c", str(config), "--dry-run"]],
        [[*ALERTD, "preview", "-c", str(config), "audio"], [*ALERTD, "facets", "-c", str(config)]],
    ]
    runners = [
        subprocess.Popen([sys.executable, "-c", LOOP, repr(commands), "20"], env=env, **LOOP_IO)
        for commands in loops
    ]
    try:
        for runner in runners:
            runner.wait(timeout=60)
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=15)
    served = limited.requests()
    statuses = [r.status for r in served]
    assert 429 not in statuses
    assert most_in_a_window([r.at for r in served]) <= LIMIT
    # and the budget was used, by several processes
    assert len(served) > LIMIT  # more than a window's worth: windows rolled over
    assert {r.path.split("?")[0] for r in served} >= {"/jobs/changes", "/jobs", "/jobs/facets"}


LOOP = """
import subprocess, sys, time
commands, seconds = eval(sys.argv[1]), float(sys.argv[2])
end = time.monotonic() + seconds
turn = 0
while time.monotonic() < end:
    command = commands[turn % len(commands)]
    turn += 1
    try:
        subprocess.run(command, timeout=max(1.0, end - time.monotonic()),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        pass  # still waiting for the budget when time was up: killed, slot and all
"""
LOOP_IO = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}


@pytest.mark.slow
def test_the_facets_request_run_makes_at_start_counts(
    standin: StandInServer, tmp_path: Path, write_config: WriteConfig
) -> None:
    """`run` with requests_per_minute 3 against an API that allows 3: the facets
    request at start and the first cycle's requests together stay at 3 in the first
    minute (before, the start's facets were not counted: 4, and a 429)."""
    standin.edge.rate_limit = 3
    config = write_config(
        "requests_per_minute: 3\npoll_interval: 60\n"
        + SEARCHES
        + "  - name: french\n    language: French\n"
    )
    log = tmp_path / "run.log"
    with log.open("w") as out:
        daemon = subprocess.Popen(
            [*ALERTD, "run", "-c", str(config)], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 20
        while len(standin.requests()) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(2.0)  # time enough for a fourth request, were one let out
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=15)
    served = [(r.path.split("?")[0], r.status) for r in standin.requests()]
    assert served[0] == ("/jobs/facets", 200)
    assert len(served) == 3 and all(status == 200 for _, status in served), served


def test_cli_commands_count_in_the_state_dir(
    standin: StandInServer, write_config: WriteConfig, state_dir: Path, run_cli: RunCli
) -> None:
    """preview, facets and validate --online each leave their request in the window."""
    config = write_config(SEARCHES)
    state_dir.mkdir()  # a daemon's (preview and the others make none)
    for args in (["preview", "audio"], ["facets"], ["validate", "--online"]):
        result = run_cli(*args, "-c", config)
        assert result.exit_code == 0, result.output
    window = SharedWindow(state_dir / BUDGET_FILE, 30.0)
    with window._locked(SPAN) as (state, _now):
        assert len(state.ended) == len(standin.requests()) == 3


def test_facets_as_another_user_falls_back_with_one_line(
    standin: StandInServer, write_config: WriteConfig, state_dir: Path
) -> None:
    """The daemon's state dir, which this user cannot write: facets still answers,
    with one warning line, no traceback."""
    config = write_config(SEARCHES)
    config.chmod(0o644)
    SharedWindow(state_dir / BUDGET_FILE, 30.0).check()  # made by the daemon's user
    with as_another_user(state_dir):
        result = CliRunner().invoke(cli, ["facets", "-c", str(config)])
    assert result.exit_code == 0, result.output
    assert "categories:" in result.output
    warnings = [line for line in result.output.splitlines() if "WARNING" in line]
    assert len(warnings) == 1 and "counts only its own requests" in warnings[0], result.output
    assert "Traceback" not in result.output
    assert len(standin.requests()) == 1


def test_facets_with_api_url_does_not_need_a_finished_config(
    standin: StandInServer, tmp_path: Path, run_cli: RunCli
) -> None:
    """The config is read only for its state_dir: one being written is no error."""
    config = tmp_path / "alerts.yaml"
    config.write_text("searches: [unfinished\n", encoding="utf-8")
    result = run_cli("facets", "-c", config, "--api-url", standin.url)
    assert result.exit_code == 0, result.output
    assert "categories:" in result.output


def test_without_a_window_a_client_counts_alone(standin: StandInServer) -> None:
    with OpenTrainClient(standin.url) as client:
        assert isinstance(client.budget.window, LocalWindow)
    assert budget.WINDOW == 60.0  # the real minute unless a test shortens it
