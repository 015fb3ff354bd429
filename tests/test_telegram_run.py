"""The bot inside a real ``alertd run``: a member's search alerts their chat through the
daemon's own sender, and the alert's button stops it while the daemon keeps cycling."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from alertd.market import Market
from alertd.members import Members, SearchDraft
from alertd.standin import StandInServer
from tests.fakebot import TOKEN, FakeBot, fake_bot
from tests.test_telegram_crash import _config

CHAT = 77


def _cycles(state_dir: Path) -> int:
    try:
        return int(json.loads((state_dir / "heartbeat.json").read_text())["cycles"])
    except (OSError, ValueError, KeyError):
        return 0


def _wait_cycles(state_dir: Path, count: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while _cycles(state_dir) < count:
        assert time.monotonic() < deadline, "the daemon did not cycle"
        time.sleep(0.05)


@pytest.mark.slow  # a real alertd run for several cycles
def test_alertd_run_alerts_a_members_chat_and_its_button_stops_the_search(
    tmp_path: Path, market: Market, standin: StandInServer, state_dir: Path
) -> None:
    members = Members.open(state_dir)
    member = members.add_feed_member(SearchDraft(title="Audio", q="audio")).member
    members.telegram_update(None, lambda book: book.attach(member.id, CHAT))
    fake: FakeBot
    with fake_bot() as (fake, url):
        config = _config(tmp_path, standin, state_dir, url)
        config.write_text(config.read_text().replace("poll_interval: 60", "poll_interval: 2"))
        env = {**os.environ, "GUILD_BOT": TOKEN}
        with (tmp_path / "alertd.log").open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "alertd", "run", "-c", str(config)],
                stdout=log, stderr=subprocess.STDOUT, env=env,
                cwd=Path(__file__).parent.parent,
            )  # fmt: skip
        try:
            _wait_cycles(state_dir, 1)  # primed
            market.add_job(title="Spanish audio transcription")
            [alert] = fake.wait_for(CHAT, 1, timeout=20)
            assert "Spanish audio transcription" in alert.text
            data = dict(alert.buttons())["Stop this search"]
            assert fake.wait_confirmed(fake.tap(alert, data))
            [stopped] = fake.wait_for(CHAT, 1, after=1)
            assert "Stopped" in stopped.text
            seen = _cycles(state_dir)
            market.add_job(title="More audio work")
            _wait_cycles(state_dir, seen + 2)
            assert len(fake.messages(CHAT)) == 2  # nothing more after the stop
        finally:
            process.terminate()
            process.wait(10)
    assert Members.open(state_dir).searches_of(member.id) == []
    assert TOKEN not in (tmp_path / "alertd.log").read_text()
