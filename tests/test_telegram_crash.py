"""``kill -9`` mid-conversation: a real ``alertd run`` with the bot is killed while
members' commands are being acted on; its restart acts on no command twice, loses none,
and a /watch half done goes on where it was."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from alertd.members import Members, SearchDraft
from alertd.standin import StandInServer
from tests.fakebot import TOKEN, FakeBot, fake_bot

CHATS = (11, 12, 13, 14)
HALFWAY = 15  # a member in the middle of /watch when the kill comes


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _config(tmp_path: Path, standin: StandInServer, state_dir: Path, bot_url: str) -> Path:
    path = tmp_path / "alerts.yaml"
    path.write_text(
        f"api_url: {standin.url}\nstate_dir: {state_dir}\npoll_interval: 60\n"
        "community:\n  name: Guild\n  public_url: https://alerts.example.org\n"
        f"  listen: 127.0.0.1:{_free_port()}\n"
        f"  telegram: {{token: '${{GUILD_BOT}}', api_url: '{bot_url}'}}\n",
        encoding="utf-8",
    )
    return path


def _run(config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "GUILD_BOT": TOKEN}
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "alertd", "run", "-c", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=Path(__file__).parent.parent,
        )


def _polling(fake: FakeBot, since: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while len(fake.offsets) <= since:
        assert time.monotonic() < deadline, "the bot never polled"
        time.sleep(0.05)


def _member_with_searches(members: Members, chat: int, count: int) -> str:
    member = members.add_feed_member(SearchDraft(title="s0", q="a")).member
    for n in range(1, count):
        members.add_search(member.id, SearchDraft(title=f"s{n}", q="a"), limit=10)
    members.telegram_update(None, lambda book: book.attach(member.id, chat))
    return member.id


def _done(state_dir: Path, ids: dict[int, str]) -> int:
    """How many /stop commands the table shows done (each member began with 4)."""
    members = Members.open(state_dir)
    return 4 * len(ids) - sum(len(members.searches_of(m)) for m in ids.values())


@pytest.mark.slow  # a real alertd run, started twice
def test_kill_9_mid_conversation_acts_on_each_command_once(
    tmp_path: Path, standin: StandInServer, state_dir: Path
) -> None:
    members = Members.open(state_dir)
    ids = {chat: _member_with_searches(members, chat, 4) for chat in CHATS}
    with fake_bot() as (fake, url):
        config = _config(tmp_path, standin, state_dir, url)
        log = tmp_path / "alertd.log"
        process = _run(config, log)
        try:
            _polling(fake, 0)
            fake.say(HALFWAY, "/watch")
            [wizard] = fake.wait_for(HALFWAY, 1)
            for _ in range(4):
                tap = fake.tap(wizard, next(d for t, d in wizard.buttons() if t == "Any"))
                assert fake.wait_confirmed(tap)
            assert "Keywords" in wizard.text
            updates = [fake.say(chat, "/stop 1") for _ in range(3) for chat in CHATS]
            # The updates come in three waves of one per chat (one write each). Killed
            # once the second wave is written and its replies wait for the chats' second
            # to pass (one message a second to a chat): the third is not acted on yet.
            while _done(state_dir, ids) < 8:
                time.sleep(0.005)
            os.kill(process.pid, signal.SIGKILL)
            assert process.wait(10) == -signal.SIGKILL
            assert 8 <= _done(state_dir, ids) < 12  # killed mid-way
            asked = len(fake.offsets)
            process = _run(config, log)
            _polling(fake, asked)
            assert fake.wait_confirmed(updates[-1], timeout=20)
            fake.say(HALFWAY, "audio")  # the /watch goes on after the restart
            [ask_pay] = fake.wait_for(HALFWAY, 1, after=1)
        finally:
            process.kill()
            process.wait(10)
    members = Members.open(state_dir)
    left = {chat: len(members.searches_of(ids[chat])) for chat in CHATS}
    assert left == dict.fromkeys(CHATS, 1)  # three /stop 1 each, each done once
    replies = [m.text for c in CHATS for m in fake.messages(c)]
    assert len(replies) <= 12 and all("Stopped 1" in r for r in replies)
    assert "least pay" in ask_pay.text
    assert TOKEN not in log.read_text() and TOKEN.split(":")[1] not in log.read_text()
