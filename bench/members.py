"""Benchmark alertd for a community whose members subscribe themselves.

Run it from the repository root with the project's venv:

    python bench/members.py fanout --members 10000
    python bench/members.py quiet --members 10000 --operators 1000

fanout: one job matching every member's search. Each member has one search (all the
same query, so one fetch) and gets e-mail through the community's mail URL; the mails go
to a local SMTP relay (aiosmtpd, its own process, accepting everything). Measured: from
the start of the cycle that sees the job to the last mail handed to the relay, the
cycle's CPU, and how many SMTP sessions it took. ``--feeds``: every member also has
their personal feed, as on the community page (a feed write per member besides the mail).

quiet: N members with one search each (about N/10 distinct queries, of the shapes
``bench/community.py`` gives the operator's searches) on top of M operator searches over
M/5 queries, against that bench's 5,000-job market (the stand-in in its own process).
One worker process primes everything unpaced; a fresh one (the daemon after a restart)
serves the community page as ``alertd run`` does and measures quiet cycles (requests,
CPU, wall, paced at the config's 120 requests a minute), then two sign-ups through the
page's form, each confirmed by the link of its mail (one with a keyword no one else has,
so a query of its own; one with a query 10 members share): whether the first cycle after
them primes both, and whether one new matching job each reaches them by mail in the
cycle after. Peak RSS is that worker's, page and cycles together.

Markdown goes to stdout, progress to stderr. Nothing in ``alertd/`` is changed.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import queue
import random
import re
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import community as scale  # bench/community.py: its market, searches and stand-in
import httpx

from alertd.api import OpenTrainClient
from alertd.budget import open_window
from alertd.community.mail import send_mail
from alertd.community.provider import MemberSearches
from alertd.community.serve import serve_community
from alertd.config import Config, load_config, settle_heap
from alertd.deliver import sender_for, with_feeds
from alertd.feeds import Feeds
from alertd.market import Market
from alertd.members import Members as MembersTable
from alertd.models import SavedSearch, Target
from alertd.pipeline import CycleReport, make_client, run_once
from alertd.render import Links
from alertd.standin import StandInServer
from alertd.store import Store
from alertd.subscriptions import MEMBERS_OWNER, Subscriptions, of_config

RELAY = """
import json, signal, sys, time, threading
from aiosmtpd.controller import Controller
arrivals = []
recipients = []
sessions = [0]
class Sink:
    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        sessions[0] += 1
        session.host_name = hostname
        return responses
    async def handle_DATA(self, server, session, envelope):
        arrivals.append(time.time())
        recipients.append([time.time(), *envelope.rcpt_tos])
        return "250 OK"
c = Controller(Sink(), hostname="127.0.0.1", port=int(sys.argv[1]))
c.start()
print("ready", flush=True)
done = threading.Event()
signal.signal(signal.SIGTERM, lambda *a: done.set())
done.wait()
c.stop()
json.dump(
    {"arrivals": arrivals, "recipients": recipients, "sessions": sessions[0]},
    open(sys.argv[2], "w"),
)
"""


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class Members:
    """The members' searches, as the members table provides them."""

    owner = MEMBERS_OWNER

    def __init__(self, count: int, port: int, feeds: bool) -> None:
        mail = f"mailto://127.0.0.1:{port}?from=alerts@example.org"
        self.items = tuple(
            SavedSearch(
                name=f"member:s{n}",
                title="Spanish audio",
                category="Audio Annotation",
                targets=(
                    Target(f"member:m{n}:now", f"member m{n}", f"{mail}&to=m{n}@example.com"),
                    *([Target.feed(f"member:m{n}", f"member m{n}'s feed")] if feeds else []),
                ),
                source=MEMBERS_OWNER,
            )
            for n in range(count)
        )

    def searches(self) -> Sequence[SavedSearch]:
        return self.items

    def links(self, target: str, searches: Sequence[str]) -> Links | None:
        member = target.split(":")[1]
        return Links(
            manage=f"https://alerts.example.org/m/{member}",
            unsubscribe=f"https://alerts.example.org/u/{member}",
            list_id=f"Spanish audio <{member}.alerts.example.org>",
        )


@contextmanager
def mail_relay(work: Path) -> Iterator[tuple[int, subprocess.Popen[str]]]:
    """The SMTP relay in a process of its own, ready: its port and process. It writes
    what it received to ``work/relay.json`` when it ends (SIGTERM); a run that failed
    leaves no relay behind."""
    port = 20000 + os.getpid() % 20000
    relay = subprocess.Popen(
        [sys.executable, "-c", RELAY, str(port), str(work / "relay.json")],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert relay.stdout is not None and relay.stdout.readline().strip() == "ready"
    try:
        yield port, relay
    finally:
        if relay.poll() is None:
            relay.send_signal(signal.SIGTERM)
            relay.wait(30)


def fanout(count: int, work: Path, feeds: bool) -> dict[str, object]:
    with mail_relay(work) as (port, relay):
        return measure(count, work, feeds, port, relay)


def measure(
    count: int, work: Path, feeds: bool, port: int, relay: subprocess.Popen[str]
) -> dict[str, object]:
    dump = work / "relay.json"
    market = Market(seed=5)
    server = StandInServer(market, cache_ttl=0, rate_limit=10_000).start()
    config_path = work / "alerts.yaml"
    config_path.write_text(
        f"api_url: {server.url}\nstate_dir: {work / 'state'}\nrequests_per_minute: 120\n"
        "searches:\n  - name: ops\n    category: RLHF\n    notify: [json://127.0.0.1:9/ops]\n",
        encoding="utf-8",
    )
    config = load_config(config_path)
    members = Members(count, port, feeds)
    subs = Subscriptions.gather([of_config(config.searches, config.owner), members])
    send = with_feeds(sender_for(30.0, config.tz), Feeds.open(config.state_dir))

    def cycle() -> tuple[float, float]:
        started, cpu = time.perf_counter(), time.process_time()
        with Store.open(config.state_dir) as store, OpenTrainClient(server.url) as client:
            report = run_once(config, client, store, send, subscriptions=subs)
        say(f"  {report.summary()}")
        return started, time.process_time() - cpu

    try:
        say(f"fanout: priming {count:,} members' searches")
        cycle()
        market.add_job(title="Spanish audio transcription", category="Audio Annotation")
        say("fanout: one job for all of them")
        started, cpu = cycle()
        wall_started = time.time() - (time.perf_counter() - started)
    finally:
        server.stop()
        relay.send_signal(signal.SIGTERM)
        relay.wait(30)
    got = json.loads(dump.read_text())
    arrivals = sorted(got["arrivals"])
    return {
        "members": count,
        "feeds": "yes" if feeds else "no",
        "delivered": len(arrivals),
        "last_mail_s": round(arrivals[-1] - wall_started, 1) if arrivals else None,
        "cycle_cpu_s": round(cpu, 1),
        "smtp_sessions": got["sessions"],
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


# -- quiet: members on top of operator searches, once primed ------------------------------

PUBLIC = "https://alerts.example.org"
MEMBERS_PER_QUERY = 10  # 10,000 members over about 1,000 distinct queries
QUIET_CYCLES = 5
NEW_WORD = "zebra"  # a sign-up's keyword that no other search has: a query of its own
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def member_queries(count: int, seed: int) -> list[dict[str, str]]:
    """``count`` distinct queries of the shapes the operator's searches have."""
    pool = scale.query_pool(scale.EXACT_SHAPES + scale.Q_SHAPES)
    return random.Random(seed).sample(pool, min(count, len(pool)))


def fill_members(state_dir: Path, count: int, queries: list[dict[str, str]]) -> None:
    """``count`` confirmed members with one search each, the queries taken in turn."""
    table = MembersTable.open(state_dir)

    def change(data: dict[str, Any], now: datetime) -> None:
        for n in range(count):
            query = queries[n % len(queries)]
            member = table._add_member(data, now, email=f"m{n}@example.org", feed=False)
            search = {
                "title": f"search {n}",
                "q": query.get("q"),
                "category": query.get("category"),
                "language": query.get("language"),
                "country": query.get("country"),
                "pay_type": query.get("payType"),
                "filters": {},
                "pace": "now",
                "digest_hour": None,
            }
            table._add_search(data, now, member, search, 10)

    table._write(change)


def subscriptions(config: Config, members: MemberSearches) -> Subscriptions:
    """A cycle's searches as ``alertd run`` gathers them: the YAML's, then the members'."""
    return Subscriptions.gather([of_config(config.searches, config.owner), members])


def prime_worker(args: dict[str, Any]) -> dict[str, Any]:
    """Prime every search (unpaced), then age the state with past seen ids."""
    config = load_config(Path(args["config"]))
    assert config.community is not None
    members = MemberSearches(MembersTable.open(config.state_dir), config.community)
    started, requests, cycles = time.perf_counter(), 0, 0
    with Store.open(config.state_dir) as store, scale.fast_client(config) as client:
        while cycles < 50:
            subs = subscriptions(config, members)
            report = run_once(config, client, store, scale.record_send, subscriptions=subs)
            cycles, requests = cycles + 1, requests + report.requests
            say(f"  prime: {report.summary()[:150]}")
            if not report.primed:
                break
        now = datetime.now(UTC)
        for index, search in enumerate(subs.searches):
            past = (f"past_{index % 997:03d}_{k}" for k in range(scale.AGE_PER_SEARCH))
            store.prime(search, past, now)
        store.commit()
        seen = sum(len(state.seen) for state in store.searches.values())
    return {
        "prime_s": time.perf_counter() - started,
        "prime_requests": requests,
        "prime_cycles": cycles,
        "seen": seen,
    }


class Daemon:
    """What ``alertd run`` holds in the measuring worker: the page, its mail, the store,
    one paced client and the real senders; ``cycle`` is one of its cycles."""

    def __init__(self, config: Config, store: Store) -> None:
        assert config.community is not None
        self.config, self.store = config, store
        self.table = MembersTable.open(config.state_dir)
        self.mails: queue.Queue[str] = queue.Queue()
        stop = threading.Event()
        feeds = Feeds.open(config.state_dir)
        self.page = serve_community(
            config.community,
            self.table,
            api_url=config.api_url,
            state_dir=config.state_dir,
            requests_per_minute=config.requests_per_minute,
            send=self.post,
            port=0,
            feeds=feeds,
        )
        window = open_window(config.state_dir, config.request_timeout, create=True)
        self.client = make_client(config, stop, window)
        self.send = with_feeds(sender_for(config.send_timeout, config.tz, stop), feeds)
        settle_heap()  # as ``alertd run`` does before its first cycle
        self.memory: dict[str, list[float]] = {}
        memory("page served, state loaded", self.memory)

    def post(self, url: str | None, to: str, subject: str, body: str) -> bool:
        """The page's mail, sent for real; the bench reads its link as the member would."""
        self.mails.put(body)
        return send_mail(url, to, subject, body)

    def cycle(self, profiler: cProfile.Profile | None = None) -> tuple[CycleReport, float, float]:
        """One cycle: (report, CPU seconds of the whole process, wall seconds)."""
        cpu, wall = time.process_time(), time.perf_counter()
        if profiler is not None:
            profiler.enable()
        subs = self.page.subscriptions(self.config)
        report = run_once(self.config, self.client, self.store, self.send, subscriptions=subs)
        if profiler is not None:
            profiler.disable()
        return report, time.process_time() - cpu, time.perf_counter() - wall

    def close(self) -> None:
        self.client.close()
        self.page.close()


def memory(label: str, steps: dict[str, list[float]]) -> None:
    """The process's resident and peak memory now (MiB), kept under ``label``."""
    status = Path("/proc/self/status").read_text(encoding="ascii")
    found = dict(re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", status, re.M))
    steps[label] = [int(found.get("VmRSS", 0)) / 1024, int(found.get("VmHWM", 0)) / 1024]
    say(f"  memory {label}: {steps[label][0]:.0f} MiB now, {steps[label][1]:.0f} MiB peak")


def sign_up(http: httpx.Client, daemon: Daemon, fields: dict[str, str]) -> None:
    """The sign-up form sent, then the mailed link opened and its button pressed."""
    token = CSRF.search(http.get("/").text)
    assert token, "no CSRF token on the form"
    form = {"csrf_token": token.group(1), "action": "signup", "delivery": "email"}
    answer = http.post("/signup", data={**form, "pace": "now", **fields})
    assert answer.status_code == 200 and "Check your mail" in answer.text, answer.text[:300]
    link = re.search(r"https://\S+", daemon.mails.get(timeout=30))
    assert link, "no link in the confirmation mail"
    path = link.group(0)[len(PUBLIC) :]
    token = CSRF.search(http.get(path).text)
    assert token, "no button on the confirmation page"
    done = http.post(path, data={"csrf_token": token.group(1)})
    assert done.status_code == 303, done.status_code


def keep_session(http: httpx.Client) -> Callable[[httpx.Response], None]:
    """Sends back the page's session cookie: marked Secure (the public URL is https, as
    behind a TLS proxy), httpx keeps it from plain http to 127.0.0.1, where a browser
    would not."""

    def hook(response: httpx.Response) -> None:
        cookie = response.headers.get("set-cookie")
        if cookie:
            http.headers["Cookie"] = cookie.split(";", 1)[0]

    return hook


def quiet_cycles(daemon: Daemon, profile: bool) -> dict[str, Any]:
    """Quiet cycles (nothing changed on the market), the first one after the restart;
    ``profile``: that first one under cProfile (its CPU figure is then the profiled one)."""
    profiler = cProfile.Profile(time.process_time) if profile else None
    runs = []
    for n in range(QUIET_CYCLES):
        runs.append(daemon.cycle(profiler if n == 0 else None))
        memory(f"quiet cycle {n + 1}", daemon.memory)
    cpus = [cpu for _, cpu, _ in runs]
    result: dict[str, Any] = {
        "searches": runs[-1][0].searches,
        "queries": runs[-1][0].queries,
        "quiet_requests": [report.requests for report, _, _ in runs],
        "quiet_cpu": cpus,
        "quiet_wall": [wall for _, _, wall in runs],
        "rss_quiet_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if profiler is not None:
        result["quiet_profile"] = scale.profile_text(profiler)
    return result


def sign_ups_live(daemon: Daemon) -> dict[str, Any]:
    """Two sign-ups through the form; the next cycle; one new job each; the next cycle."""
    # Member 0's query, which 9 others share (primed long ago).
    shared = next(s for _, s in daemon.table.active() if s.title == "search 0")
    given = {
        "q": shared.q or "",
        "category": shared.category or "",
        "language": shared.language or "",
        "country": shared.country or "",
        "pay_type": shared.pay_type or "",
    }
    signups = {"own": {"q": NEW_WORD, "email": "new-own@example.org"}}
    signups["shared"] = {**given, "email": "new-shared@example.org"}
    with httpx.Client(base_url=daemon.page.url, timeout=30) as http:
        http.event_hooks["response"] = [keep_session(http)]
        for fields in signups.values():
            sign_up(http, daemon, fields)
    confirmed = time.time()
    memory("2 sign-ups confirmed", daemon.memory)
    emails = {fields["email"]: kind for kind, fields in signups.items()}
    names = {
        emails[member.email]: f"member:{search.id}"
        for member, search in daemon.table.active()
        if member.email in emails
    }
    report, cpu, wall = daemon.cycle()
    memory("the cycle after them", daemon.memory)
    live = {kind: name in report.primed for kind, name in names.items()}
    # One job only the new keyword finds (a category no other search has), one the
    # shared query lists: published on the stand-in, then the daemon's next cycle.
    rng = random.Random(scale.SEED)
    own_job = {
        "title": f"{NEW_WORD.title()} crossing audio labelling",
        "category": "Bench",
        "languages": ["Latin"],
    }
    fixed = {k: v for k, v in given.items() if v and k != "pay_type"}
    shared_job = scale.job_fields(rng, **fixed, payType=given["pay_type"] or None)
    with httpx.Client(base_url=daemon.config.api_url, timeout=30) as api:
        for job in (own_job, shared_job):
            api.post("/_control/jobs", json=job).raise_for_status()
    published = time.time()
    job_report, job_cpu, job_wall = daemon.cycle()
    memory("the cycle with the new jobs", daemon.memory)
    return {
        "confirmed_at": confirmed,
        "signup_cycle": {"requests": report.requests, "cpu": cpu, "wall": wall, "live": live},
        "published_at": published,
        "job_cycle": {
            "requests": job_report.requests,
            "cpu": job_cpu,
            "wall": job_wall,
            "sent": job_report.sent,
            "failed": job_report.failed_sends,
        },
        "emails": emails,
    }


def measure_worker(args: dict[str, Any]) -> dict[str, Any]:
    """A fresh process on the primed state, the page served: quiet cycles, then sign-ups."""
    config = load_config(Path(args["config"]))
    with Store.open(config.state_dir) as store:
        daemon = Daemon(config, store)
        try:
            result = quiet_cycles(daemon, bool(args.get("profile")))
            result |= sign_ups_live(daemon)
        finally:
            daemon.close()
        result["memory"] = daemon.memory
    result["rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["members_mb"] = (config.state_dir / "members.json").stat().st_size / 1e6
    return result


def quiet(count: int, operators: int, work: Path, profile: bool) -> dict[str, Any]:
    """The whole quiet run: relay, stand-in, config, members, prime, measure."""
    with mail_relay(work) as (port, _), scale.standin(cache_ttl=0, rate_limit=scale.FAST) as url:
        specs = scale.make_searches(
            operators, lambda name: f"json://127.0.0.1:9/{name}", scale.SEED + operators
        )
        mail = f"mailto://127.0.0.1:{port}?from=alerts@example.org"
        community = {"name": "Bench Guild", "public_url": PUBLIC, "mail": mail}
        config = scale.write_config(
            work / "alerts.yaml",
            url,
            specs,
            poll_interval="5m",
            requests_per_minute=120,
            community=community,
        )
        queries = member_queries(max(1, count // MEMBERS_PER_QUERY), scale.SEED + count)
        say(f"quiet: {count:,} members over {len(queries):,} queries")
        fill_members(work / "state", count, queries)
        say(f"quiet: priming, with {operators:,} operator searches")
        result = {"members": count, "operators": operators}
        result |= scale.run_worker("prime", {"config": str(config)}, __file__)
        say("quiet: measuring in a fresh process")
        result |= scale.run_worker("measure", {"config": str(config), "profile": profile}, __file__)
    dump = work / "relay.json"
    arrivals: dict[str, float] = {}
    for at, *rcpts in json.loads(dump.read_text())["recipients"]:
        for rcpt in rcpts:
            if at >= result["published_at"] and rcpt in result["emails"]:
                arrivals.setdefault(result["emails"][rcpt], at - result["published_at"])
    result["mail_after_job"] = arrivals
    return result


def quiet_report(row: dict[str, Any]) -> str:
    """The quiet run as Markdown."""
    cpus, walls = row["quiet_cpu"], row["quiet_wall"]
    signup, job = row["signup_cycle"], row["job_cycle"]
    mails = row["mail_after_job"]
    lines = [
        f"{row['members']:,} members + {row['operators']:,} operator searches: "
        f"{row['searches']:,} searches, {row['queries']:,} distinct queries, "
        f"{row['seen']:,} seen ids, members.json {row['members_mb']:.1f} MB; primed in "
        f"{row['prime_cycles']} cycles, {row['prime_requests']:,} requests, "
        f"{row['prime_s']:.0f} s (unpaced)",
        "",
        "| measure | result |",
        "|---|---|",
        f"| quiet cycles: requests each | {', '.join(map(str, row['quiet_requests']))} |",
        f"| quiet cycle CPU, first after the restart | {cpus[0]:.2f} s |",
        f"| quiet cycle CPU, the next {len(cpus) - 1} (median, max) "
        f"| {statistics.median(cpus[1:]):.2f} s, {max(cpus[1:]):.2f} s |",
        f"| quiet cycle wall (median) | {statistics.median(walls):.2f} s |",
        f"| peak RSS after the quiet cycles / at the end | {row['rss_quiet_mib']:.0f} MiB / "
        f"{row['rss_mib']:.0f} MiB |",
        f"| the first cycle after 2 sign-ups: primed them? | own query: "
        f"{'yes' if signup['live']['own'] else 'NO'}, shared query: "
        f"{'yes' if signup['live']['shared'] else 'NO'} ({signup['requests']} requests, "
        f"{signup['cpu']:.2f} s CPU, {signup['wall']:.2f} s wall) |",
        f"| the next cycle, one new job for each: mail at the relay after | own query: "
        f"{seconds_or_no(mails.get('own'))}, shared query: {seconds_or_no(mails.get('shared'))} "
        f"({job['requests']} requests, {job['sent']} alerts sent, {job['cpu']:.2f} s CPU, "
        f"{job['wall']:.2f} s wall) |",
    ]
    if "quiet_profile" in row:
        lines += ["", "```", row["quiet_profile"], "```"]
    return "\n".join(lines)


def seconds_or_no(value: float | None) -> str:
    return "NONE" if value is None else f"{value:.2f} s"


def machine() -> str:
    python = platform.python_version()
    return f"machine: {platform.platform()}, {os.cpu_count()} cores, Python {python}"


def main() -> None:
    if sys.argv[1:2] == ["--worker"]:
        spec = json.loads(sys.argv[2])
        work: Callable[[dict[str, Any]], dict[str, Any]]
        work = prime_worker if spec["kind"] == "prime" else measure_worker
        print(json.dumps(work(spec)))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    fan = sub.add_parser("fanout", help="one job matching every member")
    fan.add_argument("--members", type=int, default=10_000)
    fan.add_argument("--feeds", action="store_true", help="each member also has a feed")
    calm = sub.add_parser("quiet", help="quiet cycles, RSS and sign-ups, once primed")
    calm.add_argument("--members", type=int, default=10_000)
    calm.add_argument("--operators", type=int, default=1_000)
    calm.add_argument(
        "--profile", action="store_true", help="cProfile the first quiet cycle after the restart"
    )
    calm.add_argument("--keep", type=Path, help="work in this directory and keep it")
    args = parser.parse_args()
    if args.what == "quiet":
        with tempfile.TemporaryDirectory() as tmp:
            work = args.keep or Path(tmp)
            work.mkdir(parents=True, exist_ok=True)
            result = quiet(args.members, args.operators, work, args.profile)
        print(machine())
        print(quiet_report(result))
        return
    with tempfile.TemporaryDirectory() as tmp:
        row = fanout(args.members, Path(tmp), args.feeds)
    print(machine())
    print(
        "| members | their feeds too | mails at the relay | last mail after | cycle CPU "
        "| SMTP sessions | peak RSS |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|")
    print(
        f"| {row['members']:,} | {row['feeds']} | {row['delivered']:,} | "
        f"{row['last_mail_s']} s | "
        f"{row['cycle_cpu_s']} s | {row['smtp_sessions']} | {row['peak_rss_mib']} MiB |"
    )


if __name__ == "__main__":
    main()
