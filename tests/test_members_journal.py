"""The members table's journal (issue 13): a change is one fsynced line in
``members.journal``, not a rewrite of ``members.json``. What a member saw done survives
``kill -9`` the instant after the page answered; a torn last line is skipped with a
warning; compaction folds the journal into the snapshot, also when cut short; another
process's changes are seen by reading only the new lines; a deleted member's address
leaves every file at once; the journal never grows past its bound; it is never a link
and never readable by others."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

import alertd.members
from alertd.errors import StoreError
from alertd.members import (
    JOURNAL_FILE,
    MEMBERS_FILE,
    LimitError,
    Members,
    SearchDraft,
    TokenError,
)
from alertd.standin import StandInServer
from tests.pageworld import CSRF, PUBLIC
from tests.servers import SMTPCollector
from tests.test_community_crash import SERVE

ROOT = Path(__file__).parent.parent


def _files_holding(state_dir: Path, text: str) -> list[str]:
    needle = text.encode()
    return sorted(p.name for p in state_dir.rglob("*") if p.is_file() and needle in p.read_bytes())


def _lines(state_dir: Path) -> list[dict[str, object]]:
    path = state_dir / JOURNAL_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def _snapshot(state_dir: Path) -> dict[str, dict[str, dict[str, object]]]:
    data: dict[str, dict[str, dict[str, object]]] = json.loads(
        (state_dir / MEMBERS_FILE).read_text()
    )
    return data


# -- kill -9 the instant after the page answered -----------------------------------------


@pytest.fixture
def page_process(standin: StandInServer, state_dir: Path) -> Iterator[tuple[Popen, str]]:
    with SMTPCollector() as smtp:
        process = subprocess.Popen(
            [sys.executable, "-c", SERVE, str(state_dir), standin.url, str(smtp.port)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        try:
            assert process.stdout is not None
            url = process.stdout.readline().strip()
            assert url.startswith("http://127.0.0.1:"), url
            yield process, url
        finally:
            process.kill()
            process.wait(10)


Popen = subprocess.Popen[str]


def _csrf(client: httpx.Client, path: str) -> str:
    found = CSRF.search(client.get(path).text)
    assert found
    return found.group(1)


def _feed_signup(client: httpx.Client, q: str) -> str:
    form = {"csrf_token": _csrf(client, "/"), "q": q, "pace": "now", "delivery": "feed"}
    answer = client.post("/signup", data={**form, "action": "signup"})
    assert answer.status_code == 303
    return str(answer.headers["location"]).split("?")[0]


def test_an_edit_and_an_unsubscribe_in_the_journal_survive_kill_9_after_the_answer(
    page_process: tuple[Popen, str], state_dir: Path
) -> None:
    process, url = page_process
    with httpx.Client(base_url=url, timeout=10) as client:
        manage = _feed_signup(client, "audio")
        _feed_signup(client, "german")
        members = Members.open(state_dir)  # folds both into members.json
        searches = {s.q: s for _, s in members.active()}
        kept, dropped = searches["audio"], searches["german"]
        edit = f"{manage}/s/{kept.id}"
        form = {"csrf_token": _csrf(client, edit), "title": "t", "q": "dutch", "pace": "now"}
        assert client.post(edit, data=form).status_code == 303
        one_click = members.unsubscribe_url(dropped.id, PUBLIC)[len(PUBLIC) :]
        answer = client.post(one_click, data={"List-Unsubscribe": "One-Click"})
        assert answer.status_code == 200
        os.kill(process.pid, signal.SIGKILL)
        assert process.wait(10) == -signal.SIGKILL
    # The snapshot still says the old: the journal is what kept both changes.
    assert set(_snapshot(state_dir)["searches"]) == {kept.id, dropped.id}
    assert len(_lines(state_dir)) == 2
    after = Members.open(state_dir)
    assert [(s.id, s.q) for _, s in after.active()] == [(kept.id, "dutch")]
    assert not (state_dir / JOURNAL_FILE).exists()  # the start folded it in


# -- a torn last line --------------------------------------------------------------------


def test_a_torn_last_line_is_skipped_with_a_warning_and_cut_off_before_the_next(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    writer = Members.open(tmp_path)
    first = writer.add_feed_member(SearchDraft(title="first"))  # members.json
    second = writer.add_feed_member(SearchDraft(title="second"))  # a journal line
    with open(tmp_path / JOURNAL_FILE, "ab") as journal:  # a writer killed mid-line
        journal.write(b'{"v":9,"ops":[["searches","x",{"member":')
    third = writer.add_feed_member(SearchDraft(title="third"))
    assert "torn line" in caplog.text
    reader = Members.open(tmp_path)
    assert {first.search.id, second.search.id, third.search.id} == {
        s.id for _, s in reader.active()
    }


def test_a_start_after_a_torn_line_keeps_every_whole_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    writer = Members.open(tmp_path)
    writer.add_feed_member(SearchDraft(title="first"))
    writer.add_feed_member(SearchDraft(title="second"))
    whole = (tmp_path / JOURNAL_FILE).read_bytes()
    (tmp_path / JOURNAL_FILE).write_bytes(whole + whole[: len(whole) // 2])
    reader = Members.open(tmp_path)
    assert sorted(s.title for _, s in reader.active()) == ["first", "second"]
    assert "torn line" in caplog.text
    assert "ana" not in caplog.text.lower() and "second" not in caplog.text


# -- compaction --------------------------------------------------------------------------


def test_compaction_folds_the_journal_into_the_snapshot(tmp_path: Path) -> None:
    members = Members.open(tmp_path)
    members.compact_changes = 5
    confirmed = members.add_feed_member(SearchDraft(title="s0"))
    searches = [
        members.add_search(confirmed.member.id, SearchDraft(title=f"s{n}"), 99) for n in (1, 2)
    ]
    assert len(_lines(tmp_path)) == 2
    for search in searches:
        members.unsubscribe(search.id)
    members.set_paused(confirmed.search.id, True)
    assert _lines(tmp_path) == []  # the fifth change compacted
    snapshot = _snapshot(tmp_path)
    assert list(snapshot["searches"]) == [confirmed.search.id]
    assert snapshot["searches"][confirmed.search.id]["paused"] is True
    assert Members.open(tmp_path).version() == members.version()


@pytest.mark.parametrize("cut", ["write_atomically", "remove"])
def test_a_compaction_cut_short_anywhere_loses_and_repeats_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cut: str
) -> None:
    """The process dies while it writes the snapshot, or between the snapshot's rename
    and the journal's removal: the next start has every change, once."""
    members = Members.open(tmp_path)
    confirmed = members.add_feed_member(SearchDraft(title="a"))
    other = members.add_search(confirmed.member.id, SearchDraft(title="b"), 9)
    members.unsubscribe(other.id)
    members.edit_search(confirmed.search.id, SearchDraft(title="a2", q="dutch"))
    version = members.version()

    def crash(*args: object) -> None:
        raise KeyboardInterrupt

    if cut == "remove":
        monkeypatch.setattr(members.journal, "remove", crash)
    else:
        monkeypatch.setattr(alertd.members, "write_atomically", crash)
    with pytest.raises(KeyboardInterrupt):
        members.remove_member("nobody")  # a deletion compacts at once
    monkeypatch.undo()
    assert len(_lines(tmp_path)) == 3
    again = Members.open(tmp_path)
    assert again.version() == version
    assert [(s.title, s.q) for _, s in again.active()] == [("a2", "dutch")]
    assert again.search(other.id) is None
    assert _snapshot(tmp_path)["searches"].keys() == {confirmed.search.id}


def test_the_journal_never_grows_past_its_bound(tmp_path: Path) -> None:
    members = Members.open(tmp_path)
    members.compact_changes, members.compact_bytes = 1000, 3000
    confirmed = members.add_feed_member(SearchDraft(title="a"))
    longest = 0
    for n in range(60):
        members.set_paused(confirmed.search.id, n % 2 == 0)
        path = tmp_path / JOURNAL_FILE
        size = path.stat().st_size if path.exists() else 0
        longest = max(longest, size)
        assert size < 3000 + 1000  # the bound and at most one line past it
    assert longest > 2000  # it did grow, and was folded in
    members.compact_changes, members.compact_bytes = 7, 1 << 20
    for n in range(30):
        members.set_paused(confirmed.search.id, n % 2 == 1)
        assert len(_lines(tmp_path)) < 7


# -- another process ---------------------------------------------------------------------

WRITER = """
import sys
from pathlib import Path
from alertd.members import Members, SearchDraft
members = Members.open(Path(sys.argv[1]))
print("ready", flush=True)
for line in sys.stdin:
    members.add_feed_member(SearchDraft(title=line.strip()))
    print("done", flush=True)
"""


def test_a_second_process_s_changes_are_seen_by_reading_only_the_new_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reader = Members.open(tmp_path)
    reader.add_feed_member(SearchDraft(title="mine"))
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert writer.stdin is not None and writer.stdout is not None
    try:
        assert writer.stdout.readline().strip() == "ready"
        before = reader.version()
        reads: list[Path] = []
        whole_read = alertd.members._read

        def counted(path: Path) -> tuple[dict[str, object], object]:
            reads.append(path)
            return whole_read(path)

        monkeypatch.setattr(alertd.members, "_read", counted)
        for title in ("theirs 1", "theirs 2"):
            writer.stdin.write(f"{title}\n")
            writer.stdin.flush()
            assert writer.stdout.readline().strip() == "done"
            assert reader.version() == before + 1
            before += 1
        assert reads == []  # two lines read, not the snapshot again
        assert reader.version() == before  # and nothing more when nothing changed
        titles = sorted(s.title for _, s in reader.active())
        assert titles == ["mine", "theirs 1", "theirs 2"]
    finally:
        writer.kill()
        writer.wait(10)


def test_two_tables_stay_equal_to_each_other_and_to_a_fresh_read(tmp_path: Path) -> None:
    """Every kind of change, at random, through one instance: another that reads only the
    new lines and a third opened afresh hold exactly what the first holds (a change that
    forgot to journal a row it touched would differ)."""
    rng = random.Random(13)
    one, two = Members.open(tmp_path), Members.open(tmp_path)
    one.compact_changes = 40
    tokens: list[str] = []
    for _ in range(150):
        member_ids = sorted(_member_ids(one))
        searches = [s for m in member_ids for s in one.searches_of(m)]
        pick = rng.randrange(9)
        if pick > 2 and not searches:
            pick = 2
        if pick == 0:
            _, token = one.start_signup(f"u{rng.randrange(30)}@example.org", SearchDraft("s"))
            tokens.append(token)
        elif pick == 1 and tokens:
            with contextlib.suppress(TokenError, LimitError):
                one.confirm(tokens.pop(rng.randrange(len(tokens))), limit=3)
        elif pick == 2:
            one.add_feed_member(SearchDraft(title=f"f{rng.random()}"))
        elif pick == 3:
            one.edit_search(rng.choice(searches).id, SearchDraft(title=f"e{rng.random()}"))
        elif pick == 4:
            one.set_paused(rng.choice(searches).id, rng.random() < 0.5)
        elif pick == 5:
            one.unsubscribe(rng.choice(searches).id)
        elif pick == 6:
            one.revoke_links(rng.choice(member_ids))
        elif pick == 7 and rng.random() < 0.3:
            one.remove_member(rng.choice(member_ids))
        else:
            with contextlib.suppress(LimitError):
                one.add_search(rng.choice(member_ids), SearchDraft(title="more"), limit=3)
        assert _everything(two) == _everything(one)
    assert _everything(two) == _everything(one)
    assert _everything(Members.open(tmp_path)) == _everything(one)


def _member_ids(members: Members) -> set[str]:
    members.refresh()
    return set(members._data["members"])


def _everything(members: Members) -> object:
    members.refresh()
    data = members._data
    ids = sorted(data["members"])
    return (
        members.version(),
        members.counts(),
        [(members.export(i), members.manage_token(i), members.feed_token(i)) for i in ids],
        sorted((k, v["hash"], v["email"]) for k, v in data["pending"].items()),
        [(s.id, members.unsubscribe_token(s.id)) for _, s in members.active()],
    )


# -- what leaves the disk ----------------------------------------------------------------


def test_a_deleted_member_s_address_leaves_every_file_before_the_call_returns(
    tmp_path: Path,
) -> None:
    members = Members.open(tmp_path)
    members.add_feed_member(SearchDraft(title="someone else"))  # members.json
    _, token = members.start_signup("ana@example.org", SearchDraft(title="a"))
    ana = members.confirm(token, limit=5)
    members.add_search(ana.member.id, SearchDraft(title="ana's second"), 5)
    members.start_signup("ANA@example.org", SearchDraft(title="not confirmed"))
    assert _files_holding(tmp_path, "ana@example.org") == [JOURNAL_FILE]
    assert members.remove_member(ana.member.id)
    assert _files_holding(tmp_path, "ana@example.org") == []
    assert _files_holding(tmp_path, "ANA@example.org") == []
    assert _files_holding(tmp_path, "ana's second") == []
    assert [s.title for _, s in Members.open(tmp_path).active()] == ["someone else"]


def test_an_expired_sign_up_s_address_leaves_every_file_at_the_next_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    members = Members.open(tmp_path)
    members.add_feed_member(SearchDraft(title="someone else"))  # members.json
    monkeypatch.setattr(alertd.members, "CONFIRM_TTL", timedelta(seconds=-1))
    _, token = members.start_signup("cy@example.org", SearchDraft(title="c"))
    assert _files_holding(tmp_path, "cy@example.org") == [JOURNAL_FILE]
    members.add_feed_member(SearchDraft(title="a third"))  # forgets the expired sign-up
    assert _files_holding(tmp_path, "cy@example.org") == []
    assert members.pending_for(token) is None


def test_an_unsubscribed_search_s_terms_leave_the_disk_within_the_bound(
    tmp_path: Path,
) -> None:
    members = Members.open(tmp_path)
    members.compact_changes = 10
    first = members.add_feed_member(SearchDraft(title="a"))
    gone = members.add_search(first.member.id, SearchDraft(title="t", q="private words"), 5)
    members.unsubscribe(gone.id)
    assert _files_holding(tmp_path, "private words") == [JOURNAL_FILE]
    for n in range(8):
        members.set_paused(first.search.id, n % 2 == 0)
    assert _files_holding(tmp_path, "private words") == []


# -- files -------------------------------------------------------------------------------


def test_the_journal_is_mode_0600_and_never_written_through_a_link(tmp_path: Path) -> None:
    members = Members.open(tmp_path)
    members.add_feed_member(SearchDraft(title="a"))
    members.add_feed_member(SearchDraft(title="b"))
    journal = tmp_path / JOURNAL_FILE
    assert journal.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / MEMBERS_FILE).stat().st_mode & 0o777 == 0o600
    Members.open(tmp_path)  # folds the journal in: none left
    elsewhere = tmp_path.parent / "elsewhere.txt"
    elsewhere.write_text("theirs\n")
    journal.symlink_to(elsewhere)
    with pytest.raises(StoreError, match="symbolic link"):
        members.add_feed_member(SearchDraft(title="c"))
    assert elsewhere.read_text() == "theirs\n"


def test_a_one_click_unsubscribe_at_2000_members_writes_a_line_not_the_table(
    tmp_path: Path,
) -> None:
    members = Members.open(tmp_path)

    def fill(data: dict[str, object], now: object) -> None:
        for n in range(2000):
            member = members._add_member(data, now, email=f"m{n}@example.org", feed=False)  # type: ignore[arg-type]
            members._add_search(data, now, member, {"title": f"s{n}"}, 5)  # type: ignore[arg-type]

    members._write(fill)
    size = (tmp_path / MEMBERS_FILE).stat().st_size
    assert size > 1_000_000
    searches = [s for _, s in members.active()][:20]
    started = time.perf_counter()
    for search in searches:
        members.unsubscribe(search.id)
    each = (time.perf_counter() - started) / len(searches)
    assert (tmp_path / JOURNAL_FILE).stat().st_size < 20 * 200
    assert (tmp_path / MEMBERS_FILE).stat().st_size == size
    assert each < 0.05, f"{each * 1000:.0f} ms an unsubscribe"
    assert not re.search(r"m\d+@example\.org", (tmp_path / JOURNAL_FILE).read_text())
