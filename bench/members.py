"""Benchmark alertd for a community whose members subscribe themselves.

Run it from the repository root with the project's venv:

    python bench/members.py fanout --members 10000

fanout: one job matching every member's search. Each member has one search (all the
same query, so one fetch) and gets e-mail through the community's mail URL; the mails go
to a local SMTP relay (aiosmtpd, its own process, accepting everything). Measured: from
the start of the cycle that sees the job to the last mail handed to the relay, the
cycle's CPU, and how many SMTP sessions it took. ``--feeds``: every member also has
their personal feed, as on the community page (a feed write per member besides the mail).

Markdown goes to stdout, progress to stderr. Nothing in ``alertd/`` is changed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from alertd.api import OpenTrainClient
from alertd.config import load_config
from alertd.deliver import sender_for, with_feeds
from alertd.feeds import Feeds
from alertd.market import Market
from alertd.models import SavedSearch, Target
from alertd.pipeline import run_once
from alertd.render import Links
from alertd.standin import StandInServer
from alertd.store import Store
from alertd.subscriptions import MEMBERS_OWNER, Subscriptions, of_config

RELAY = """
import json, signal, sys, time, threading
from aiosmtpd.controller import Controller
arrivals = []
sessions = [0]
class Sink:
    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        sessions[0] += 1
        session.host_name = hostname
        return responses
    async def handle_DATA(self, server, session, envelope):
        arrivals.append(time.time())
        return "250 OK"
c = Controller(Sink(), hostname="127.0.0.1", port=int(sys.argv[1]))
c.start()
print("ready", flush=True)
done = threading.Event()
signal.signal(signal.SIGTERM, lambda *a: done.set())
done.wait()
c.stop()
json.dump({"arrivals": arrivals, "sessions": sessions[0]}, open(sys.argv[2], "w"))
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


def fanout(count: int, work: Path, feeds: bool) -> dict[str, object]:
    port = 20000 + os.getpid() % 20000
    dump = work / "relay.json"
    relay = subprocess.Popen(
        [sys.executable, "-c", RELAY, str(port), str(dump)], stdout=subprocess.PIPE, text=True
    )
    assert relay.stdout is not None and relay.stdout.readline().strip() == "ready"
    try:
        return measure(count, work, feeds, port, relay)
    finally:
        if relay.poll() is None:  # a failed run leaves no relay behind
            relay.kill()


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    fan = sub.add_parser("fanout", help="one job matching every member")
    fan.add_argument("--members", type=int, default=10_000)
    fan.add_argument("--feeds", action="store_true", help="each member also has a feed")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        row = fanout(args.members, Path(tmp), args.feeds)
    python = platform.python_version()
    print(f"machine: {platform.platform()}, {os.cpu_count()} cores, Python {python}")
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
