"""Found in a hostile review of the changes since bb6c1ed: each test a bug it fixed."""

from __future__ import annotations

import errno
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

import alertd.members
from alertd.members import JOURNAL_FILE, Members, SearchDraft
from tests.test_feeds_more_link import summary


def _files_holding(state_dir: Path, text: str) -> list[str]:
    needle = text.encode()
    return sorted(p.name for p in state_dir.rglob("*") if p.is_file() and needle in p.read_bytes())


def test_a_full_disk_when_an_expired_sign_up_is_dropped_fails_no_one_s_own_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk has room for a journal line, not for a 7 MB snapshot: the member whose
    write dropped someone's expired sign-up was told it failed, although it was written
    (a retry made the search twice); and the expired address then stayed on disk until
    a thousand changes later."""
    members = Members.open(tmp_path)
    first = members.add_feed_member(SearchDraft(title="first"))
    monkeypatch.setattr(alertd.members, "CONFIRM_TTL", timedelta(seconds=-1))
    members.start_signup("cy@example.org", SearchDraft(title="c"))
    assert _files_holding(tmp_path, "cy@example.org") == [JOURNAL_FILE]

    def full_disk(path: Path, text: Any) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(alertd.members, "write_atomically", full_disk)
    second = members.add_search(first.member.id, SearchDraft(title="second"), limit=5)
    monkeypatch.undo()  # room again

    assert [s.title for s in members.searches_of(first.member.id)] == ["first", "second"]
    members.set_paused(second.id, True)  # the next write takes the address off the disk
    assert _files_holding(tmp_path, "cy@example.org") == []
    reopened = Members.open(tmp_path)
    assert [(s.title, s.paused) for s in reopened.searches_of(first.member.id)] == [
        ("first", False),
        ("second", True),
    ]


def test_format_time_tells_apart_the_two_01_30_of_a_night_the_clocks_go_back() -> None:
    """format_time's cache took the second 01:30 (fold=1) for the first: same datetime
    by == and hash within one zone, but an hour later."""
    from alertd.models import format_time

    new_york = ZoneInfo("America/New_York")
    first = datetime(2026, 11, 1, 1, 30, tzinfo=new_york)
    second = first.replace(fold=1)
    assert format_time(first) == "2026-11-01T05:30:00.000Z"
    assert format_time(second) == "2026-11-01T06:30:00.000Z"
    assert format_time(datetime(2026, 11, 1, 6, 30, tzinfo=ZoneInfo("UTC"))) == (
        "2026-11-01T06:30:00.000Z"
    )


def _community(public_url: str) -> str:
    return (
        f"community:\n  name: Guild\n  public_url: {public_url}\n  signup: 'off'\n"
        "channels:\n  all: {url: 'json://127.0.0.1:9/all', batch: 10m}\n"
    )


def _search(name: str, category: str, feed: bool) -> str:
    return (
        f"  - name: {name}\n    category: {category}\n"
        + ("    feed: true\n" if feed else "")
        + "    notify_existing: true\n    notify: [all]\n"
    )


@pytest.fixture
def world(tmp_path: Path) -> Any:
    from tests.world import World

    made = World(tmp_path, seed=3)
    yield made
    made.stop()


def test_a_summary_s_more_links_no_feed_that_lacks_the_jobs_it_summarised(world: Any) -> None:
    """Two searches share a channel, only one with a public feed: the summary's
    "+N more: all of them at <audio's feed>" sent readers to a feed without the text
    jobs it had summarised away."""
    for i in range(20):
        world.market.add_job(title=f"audio job {i:02d}", category="Audio Annotation")
        world.market.add_job(title=f"text job {i:02d}", category="Text Annotation")
    body = _community("https://alerts.example.org") + "searches:\n"
    body += _search("audio", "Audio Annotation", True) + _search("text", "Text Annotation", False)
    message = summary(world, body, batch=timedelta(minutes=11))  # the batch ends
    assert {n for item in message.items for n in item.searches} == {"audio", "text"}
    assert message.everything is None  # no one feed holds them all: it only counts


def test_a_summary_s_more_link_keeps_its_markup_whatever_the_page_s_address(
    world: Any,
) -> None:
    """A public_url may hold any printable character: a | ended Slack's link early and
    a > Discord's, so "+N more" pointed at a cut-off address."""
    from urllib.parse import unquote

    from alertd.render import render_discord, render_slack

    for i in range(40):
        world.market.add_job(title=f"audio job {i:02d}", category="Audio Annotation")
    page = "https://alerts.example.org/a|b>c"
    body = _community(f"'{page}'") + "searches:\n" + _search("audio", "Audio Annotation", True)
    message = summary(world, body, batch=timedelta(minutes=11))  # the batch ends
    link = f"{page}/feeds/audio.atom"
    slack = render_slack(message, None)["blocks"][-1]["elements"][0]["text"]
    assert slack.startswith("<") and slack.endswith("|+25 more>")
    assert unquote(slack[1 : -len("|+25 more>")]) == link
    content = render_discord(message, None)["content"]
    start = content.index("[+30 more](<") + len("[+30 more](<")
    end = content.index(">)", start)
    assert unquote(content[start:end]) == link
    assert content.endswith(">)")


def test_the_kept_mail_limit_is_not_rewritten_at_every_mail_once_it_holds_many(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past COMPACT_LINES live events (many addresses asked for in a day: the mail limit
    per address counts even what the total limit then refuses), every mail rewrote and
    fsynced the whole file: quadratic, and each request held the page's lock for it."""
    import alertd.community.quota as quota

    monkeypatch.setattr(quota, "COMPACT_LINES", 20)
    rewrites = []
    real = quota.write_atomically

    def counted(path: Path, text: Any) -> int:
        rewrites.append(path)
        return real(path, text)

    monkeypatch.setattr(quota, "write_atomically", counted)
    path = tmp_path / quota.QUOTA_FILE
    limiter = quota.KeptRateLimiter(path, 3, 86400.0, b"k" * 32)
    for n in range(200):
        assert limiter.allow(f"victim{n}@example.org")
    assert len(rewrites) <= 8  # at start, then as the file doubles: not once a mail
    again = quota.KeptRateLimiter(path, 1, 86400.0, b"k" * 32)  # a restart counts them all
    assert not any(again.allow(f"victim{n}@example.org") for n in range(200))


def test_the_daemon_outlives_a_members_table_it_cannot_read(
    write_config: Any, tmp_path: Path, state_dir: Path
) -> None:
    """A symbolic link planted for members.journal (or an unreadable one) made the
    members' searches raise before the cycle's own error handling: ``alertd run`` died
    with a traceback instead of logging the cycle's error and trying again."""
    import signal
    import socket
    import subprocess
    import time

    from tests.conftest import ALERTD

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    config = write_config(
        "poll_interval: 0.3\n"
        "community:\n"
        "  name: Guild\n"
        "  public_url: https://alerts.example.org\n"
        f"  listen: 127.0.0.1:{port}\n"
    )
    log_path = tmp_path / "log.txt"
    with log_path.open("w") as log:
        daemon = subprocess.Popen([*ALERTD, "run", "-c", str(config)], stdout=log, stderr=log)
    try:

        def wait_for(text: str, after: int = 0) -> int:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                found = log_path.read_text().find(text, after)
                if found >= 0:
                    return found
                assert daemon.poll() is None, log_path.read_text()
                time.sleep(0.1)
            raise AssertionError(f"no {text!r} in: {log_path.read_text()}")

        wait_for("cycle 1 ")
        elsewhere = tmp_path / "elsewhere"
        elsewhere.write_text("")
        (state_dir / JOURNAL_FILE).symlink_to(elsewhere)
        planted = len(log_path.read_text())
        wait_for(JOURNAL_FILE, planted)  # the cycle says what is wrong
        time.sleep(1.0)  # more cycles
        assert daemon.poll() is None, log_path.read_text()
        (state_dir / JOURNAL_FILE).unlink()
        healed = len(log_path.read_text())
        wait_for("cycle ", healed)
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=10)
    assert daemon.returncode == 0, log_path.read_text()


def test_a_member_deleted_on_the_page_while_the_cycle_sends_is_withdrawn_not_a_crash(
    tmp_path: Path,
) -> None:
    """The cycle asks for a member's links at the moment of sending: their search, then
    their manage and feed links. A deletion on the page between the two (another thread
    or process) raised TokenError out of the cycle ("cycle failed unexpectedly"): every
    other target's message of that cycle waited. It is a search no longer wanted."""
    from alertd.community.config import CommunitySpec
    from alertd.community.provider import MemberSearches
    from alertd.subscriptions import Subscriptions

    spec = CommunitySpec(
        name="Guild",
        public_url="https://alerts.example.org",
        mail="mailto://127.0.0.1:9?from=alerts@example.org",
    )
    members = Members.open(tmp_path)
    _, token = members.start_signup("ana@example.org", SearchDraft(title="Audio", q="audio"))
    confirmed = members.confirm(token, limit=10)
    subs = Subscriptions.gather([MemberSearches(members, spec)])
    (search,) = subs.searches
    mail = next(t.key for t in search.targets if t.feed_key is None)
    page = Members.open(tmp_path)  # the page, deleting the member in between
    found = members.search

    def search_then_deleted(search_id: str) -> Any:
        row = found(search_id)
        page.remove_member(confirmed.member.id)
        return row

    members.search = search_then_deleted  # type: ignore[method-assign]
    assert subs.links(mail, [search.name]) is None
    assert _files_holding(tmp_path, "ana@example.org") == []


def test_a_disk_too_full_for_the_members_snapshot_does_not_keep_the_page_from_starting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At start the journal is folded into members.json (7 MB at 10,000 members) and the
    mail limit's file rewritten: on a disk with room for the small files only, either
    failing stopped ``alertd run`` although both tables read whole as they are."""
    import alertd.community.quota as quota

    members = Members.open(tmp_path)
    members.add_feed_member(SearchDraft(title="in the snapshot"))
    members.add_feed_member(SearchDraft(title="in the journal"))
    assert (tmp_path / JOURNAL_FILE).exists()
    path = tmp_path / quota.QUOTA_FILE
    limiter = quota.KeptRateLimiter(path, 2, 86400.0, b"k" * 32)
    assert limiter.allow("victim@example.org") and limiter.allow("victim@example.org")

    def full_disk(path: Path, text: Any) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(alertd.members, "write_atomically", full_disk)
    monkeypatch.setattr(quota, "write_atomically", full_disk)
    started = Members.open(tmp_path)  # a restart
    titles = sorted(s.title for _, s in started.active())
    assert titles == ["in the journal", "in the snapshot"]
    again = quota.KeptRateLimiter(path, 2, 86400.0, b"k" * 32)
    assert not again.allow("victim@example.org")  # the day's two mails still counted
    monkeypatch.undo()  # room again: the next write folds the journal
    started.add_feed_member(SearchDraft(title="a third"))
    assert not (tmp_path / JOURNAL_FILE).exists()


def test_a_clock_set_back_does_not_lock_an_address_out_for_as_long_as_it_jumped(
    tmp_path: Path,
) -> None:
    """The kept mail limit runs on the wall clock. Mails sent while the clock ran a year
    ahead (a wrong RTC at boot, then NTP) stayed counted in memory until that year came
    round: a member got no confirmation mail for a year. A restart counted them as now;
    so does the running page."""
    import alertd.community.quota as quota

    day = 86400.0
    now = [1_900_000_000.0 + 365 * day]  # a year ahead
    limiter = quota.KeptRateLimiter(
        tmp_path / quota.QUOTA_FILE, 3, day, b"k" * 32, clock=lambda: now[0]
    )
    for _ in range(3):
        assert limiter.allow("ana@example.org")
    now[0] = 1_900_000_000.0  # set right
    assert not limiter.allow("ana@example.org")  # the day's three still count
    now[0] += day + 1
    assert limiter.allow("ana@example.org")  # a day on, not a year


def test_status_and_health_read_a_config_whose_pinging_discord_url_is_a_secret(
    write_config: Any, run_cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``alertd status`` and ``health`` read the config without its secrets: a Discord
    URL in ${DISCORD_URL} (as the README recommends) was taken for a channel without a
    discord:// URL, and its mention_roles made the config "invalid": health said
    unhealthy (a container's health check restarting a daemon that runs fine)."""
    monkeypatch.delenv("DISCORD_URL", raising=False)
    config = write_config(
        "channels:\n"
        "  team:\n"
        "    url: ${DISCORD_URL}\n"
        "    mention_roles: [123456789012345678]\n"
        "searches:\n"
        "  - name: audio\n    q: audio\n    notify: [team]\n"
    )
    for command in ("status", "health"):
        result = run_cli(command, "-c", config)
        assert "config error" not in result.output and "Error:" not in result.output, (
            command,
            result.output,
        )
    monkeypatch.setenv("DISCORD_URL", "json://127.0.0.1:9/not-discord")  # still refused
    result = run_cli("validate", "-c", config)
    assert result.exit_code != 0 and "only a Discord channel can ping roles" in result.output


def test_a_refused_change_does_not_read_the_whole_table_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A change refused before it touched anything (a member at their search limit, a
    used confirmation link) threw the table away: the next read parsed members.json
    again, 0.16 s of CPU at 10,000 members for each such POST, which anyone with a
    feed sign-up (no address needed) could repeat."""
    from alertd.members import LimitError, TokenError

    members = Members.open(tmp_path)
    feed = members.add_feed_member(SearchDraft(title="first"))
    reads = []
    real = alertd.members._read

    def counted(path: Path) -> Any:
        reads.append(path)
        return real(path)

    monkeypatch.setattr(alertd.members, "_read", counted)
    for _ in range(5):
        with pytest.raises(LimitError):
            members.add_search(feed.member.id, SearchDraft(title="over"), limit=1)
        with pytest.raises(TokenError):
            members.confirm("nosuch.token", limit=5)
        members.version()  # the cycle's next look
    assert reads == []
    second = members.add_search(feed.member.id, SearchDraft(title="second"), limit=5)
    assert [s.title for s in Members.open(tmp_path).searches_of(feed.member.id)] == [
        "first",
        second.title,
    ]


@pytest.mark.parametrize("role", ["99999999999999999999", "18446744073709551616"])
def test_a_role_id_past_a_64_bit_snowflake_is_refused_by_validate(
    write_config: Any, run_cli: Any, role: str
) -> None:
    """A Discord ID is a 64-bit snowflake: 20 digits past 2**64 - 1 (a 19-digit ID with
    one digit too many, most of the time) passed validate, and Discord answers 400 to
    every message whose allowed_mentions names it: the channel got nothing."""
    config = write_config(
        "channels:\n"
        "  team:\n"
        "    url: discord://1234/abcd\n"
        f"    mention_roles: [{role}]\n"
        "searches:\n"
        "  - name: audio\n    q: audio\n    notify: [team]\n"
    )
    result = run_cli("validate", "-c", config)
    assert result.exit_code != 0 and "not a Discord role ID" in result.output, result.output
    largest = str(2**64 - 1)  # still one
    config.write_text(config.read_text().replace(role, largest))
    assert run_cli("validate", "-c", config).exit_code == 0


def test_the_page_alertd_run_serves_has_the_public_feed_a_summary_links_to(
    write_config: Any, tmp_path: Path, market: Any
) -> None:
    """A summary's "+N more" links to <public_url>/feeds/<slug>.atom, but the page
    ``alertd run`` serves never knew which searches have a public feed: every such link
    (and every public feed) was a 404. A search that opts in on a reload is there too."""
    import signal
    import socket
    import subprocess
    import time

    import feedparser
    import httpx

    from tests.conftest import ALERTD

    for i in range(3):
        market.add_job(title=f"audio job {i}", category="Audio Annotation")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    head = (
        "poll_interval: 0.3\n"
        "community:\n"
        "  name: Guild\n"
        "  public_url: https://alerts.example.org\n"
        f"  listen: 127.0.0.1:{port}\n"
        "searches:\n"
        "  - name: audio\n    category: Audio Annotation\n    feed: true\n"
        "    notify_existing: true\n    notify: [json://127.0.0.1:9/audio]\n"
    )
    config = write_config(head)
    log_path = tmp_path / "log.txt"
    with log_path.open("w") as log:
        daemon = subprocess.Popen([*ALERTD, "run", "-c", str(config)], stdout=log, stderr=log)

    def feed_titles(slug: str) -> list[str] | None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert daemon.poll() is None, log_path.read_text()
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/feeds/{slug}.atom", timeout=2)
            except httpx.TransportError:
                time.sleep(0.1)
                continue
            if answer.status_code == 200:
                entries = feedparser.parse(answer.content).entries
                if entries:
                    return sorted(e.title for e in entries)
            time.sleep(0.1)
        return None

    try:
        assert feed_titles("audio") == [f"audio job {i}" for i in range(3)], log_path.read_text()
        config.write_text(
            config.read_text()
            + "  - name: text\n    category: Text Annotation\n    feed: true\n"
            + "    notify_existing: true\n    notify: [json://127.0.0.1:9/text]\n"
        )
        market.add_job(title="text job", category="Text Annotation")
        daemon.send_signal(signal.SIGHUP)
        assert feed_titles("text") == ["text job"], log_path.read_text()
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=10)
