"""The page's per-address mail limit outlives a restart (``mail_quota.jsonl``): a
mail-bomber who spent a victim's three mails of the day gets none more by waiting for
alertd to restart. The file names no address, forgets what the window no longer holds,
skips a torn line, and is never a link."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from alertd.community.quota import QUOTA_FILE, KeptRateLimiter
from alertd.community.rules import address_key
from alertd.errors import StoreError
from alertd.standin import StandInServer
from tests.pageworld import page_world, sign_up

DAY = 86_400.0


def test_a_restart_does_not_give_a_victim_three_more_mails(
    standin: StandInServer, state_dir: Path
) -> None:
    with page_world(standin, state_dir) as world:
        with world.client(ip="198.51.100.1") as client:
            for n in range(3):
                assert sign_up(world, client, f"victim+{n}@example.org").status_code == 200
        assert len(world.mails_to(None, count=3)) == 3
    with page_world(standin, state_dir) as world:  # alertd restarted
        with world.client(ip="198.51.100.2") as client:
            answer = sign_up(world, client, "Victim@example.org")
            assert answer.status_code == 200  # the page answers as for anyone
            assert sign_up(world, client, "someone@example.org").status_code == 200
        assert [list(m.rcpt_tos) for m in world.mails_to(None, count=2, wait=2)] == [
            ["someone@example.org"]
        ]
    text = (state_dir / QUOTA_FILE).read_text()
    assert "victim" not in text.lower()
    assert address_key("victim@example.org") not in text  # a plain hash could be checked
    assert hashlib.sha256(b"victim@example.org").hexdigest() not in text
    assert (state_dir / QUOTA_FILE).stat().st_mode & 0o777 == 0o600


def test_what_the_window_no_longer_holds_is_forgotten_at_start(tmp_path: Path) -> None:
    now = [1_000_000.0]
    path = tmp_path / QUOTA_FILE

    def limiter() -> KeptRateLimiter:
        return KeptRateLimiter(path, 2, DAY, b"k" * 32, clock=lambda: now[0])

    first = limiter()
    assert first.allow("a") and first.allow("a") and not first.allow("a")
    assert first.allow("b")
    now[0] += DAY - 10
    assert not limiter().allow("a")  # still within the day, after a restart
    now[0] += 20
    path.write_bytes(path.read_bytes() + b'{"k": "torn')
    again = limiter()
    assert len(path.read_text().splitlines()) == 0  # every event was older than a day
    assert again.allow("a") and again.allow("a") and not again.allow("a")
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["t"] for line in lines] == [now[0], now[0]]


def test_a_quota_file_planted_as_a_link_stops_the_start(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.write_text("")
    (tmp_path / QUOTA_FILE).symlink_to(theirs)
    with pytest.raises(StoreError, match="symbolic link"):
        KeptRateLimiter(tmp_path / QUOTA_FILE, 3, DAY, b"k" * 32)
    assert theirs.read_text() == ""
