"""A hostile reviewer's cases for the shared request window (alertd/budget.py)."""

from __future__ import annotations

import fcntl
import logging
import os
import time
from pathlib import Path

import pytest

from alertd import budget
from alertd.budget import BUDGET_FILE, BUSY_WAIT, SharedWindow

SPAN = 60.5


def test_a_lock_kept_for_good_ends_in_counting_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Any process that can open api-budget can flock it (no write access needed) and
    keep it: alertd waits BUSY_LIMIT, then counts alone after one WARNING, instead of
    waiting for ever."""
    monkeypatch.setattr(budget, "BUSY_LIMIT", 0.3)
    window = SharedWindow(tmp_path / BUDGET_FILE, 30.0)
    window.check()
    holder = os.open(tmp_path / BUDGET_FILE, os.O_RDONLY)
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        assert window.take(5, SPAN) == (BUSY_WAIT, 0.0)
        deadline = time.monotonic() + 5.0
        with caplog.at_level(logging.WARNING, logger="alertd.budget"):
            while window.take(5, SPAN)[0] > 0:
                assert time.monotonic() < deadline, "still waiting on the lock"
                time.sleep(BUSY_WAIT)
        assert window.fallback is not None
        assert caplog.text.count("cannot be used any more") == 1
        assert "locked by another process" in caplog.text
    finally:
        os.close(holder)


def test_a_lock_free_again_resets_the_busy_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two short busy spells far apart are not one long one."""
    monkeypatch.setattr(budget, "BUSY_LIMIT", 0.3)
    window = SharedWindow(tmp_path / BUDGET_FILE, 30.0)
    window.check()
    for _ in range(2):
        holder = os.open(tmp_path / BUDGET_FILE, os.O_RDONLY)
        fcntl.flock(holder, fcntl.LOCK_EX)
        assert window.take(50, SPAN) == (BUSY_WAIT, 0.0)
        os.close(holder)
        assert window.take(50, SPAN)[0] == 0.0
        window.give_back()
        time.sleep(0.35)
    assert window.fallback is None


def test_a_hard_link_planted_as_the_window_is_never_written(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """api-budget as a second name of another file (a hard link): alertd counts alone
    after one WARNING and never rewrites or truncates that file."""
    state = tmp_path / "state"
    state.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("the operator's own file\n" * 100)
    os.link(victim, state / BUDGET_FILE)
    with caplog.at_level(logging.WARNING, logger="alertd.budget"):
        window = budget.open_window(state, 30.0, create=True)
        assert window.take(5, SPAN)[0] == 0.0
    assert not isinstance(window, SharedWindow)
    assert "hard link" in caplog.text
    assert victim.read_text() == "the operator's own file\n" * 100
