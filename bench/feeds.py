"""Benchmark: Atom feeds at community scale.

Measures what a feed costs the daemon and the page:

- one job delivered into N members' feeds at once (``Feeds.add_many``), into empty feeds
  and into full ones (200 entries each: every add rewrites its file), wall and CPU time;
- the personal feed URL of a full feed on a real server (waitress when installed, else
  werkzeug's): p50/p95 of a full answer, of a 304 on If-None-Match, and of a 304 on
  If-Modified-Since alone.

Run from the repository root with the project's venv::

    python bench/feeds.py                 # 1,000 feeds (~1 min)
    python bench/feeds.py --feeds 10000   # the issue's 10,000 members (~10 min, ~1.5 GB disk)
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from flask import Flask

from alertd.community.feeds import blueprint
from alertd.feeds import KEEP_ENTRIES, FeedEntry, Feeds

NOW = datetime.now(UTC)


def job(number: int, moment: datetime) -> FeedEntry:
    """A typical entry: a 400-character summary (the cap is 2,000)."""
    return FeedEntry(
        job_id=f"job-{number:06}",
        title="German audio transcription for a speech dataset",
        url=f"https://app.opentrain.ai/jobs/job-{number:06}",
        summary="Label things carefully. " * 17,
        published=moment,
        updated=moment,
        search_title="German audio",
        pay="$20–$30/hour",
        category="Audio",
        languages="German",
    )


def one_job_into_feeds(folder: Path, count: int, full: bool) -> str:
    feeds = Feeds.open(folder)
    if full:
        backlog = [job(i, NOW - timedelta(minutes=i + 1)) for i in range(KEEP_ENTRIES)]
        feeds.add_many({f"member:{m}": backlog for m in range(count)}, NOW)
    started, cpu = time.perf_counter(), time.process_time()
    feeds.add_many({f"member:{m}": [job(999_999, NOW)] for m in range(count)}, NOW)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    size = feeds.path_for("member:0").stat().st_size
    kind = f"full ({KEEP_ENTRIES} entries, {size:,} B a file)" if full else "empty"
    return f"one job into {count:,} {kind} feeds: {wall:.1f} s wall, {cpu:.1f} s CPU"


def serve(app: Flask) -> tuple[str, Callable[[], None]]:
    """The app on a loopback port, as ``alertd run`` would serve it."""
    try:
        from waitress.server import create_server

        server = create_server(app, host="127.0.0.1", port=0, threads=4)
        threading.Thread(target=server.run, daemon=True).start()
        return f"http://127.0.0.1:{server.effective_port}", server.close
    except ImportError:
        from werkzeug.serving import make_server

        plain = make_server("127.0.0.1", 0, app, threaded=True)
        threading.Thread(target=plain.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{plain.server_port}", plain.shutdown


def page_latency(folder: Path, requests: int) -> list[str]:
    feeds = Feeds.open(folder)
    feeds.add("member:1", [job(i, NOW - timedelta(minutes=i)) for i in range(KEEP_ENTRIES)], NOW)
    app = Flask("bench-feeds")
    app.config.update(
        ALERTD_FEEDS=feeds, ALERTD_FEED_RESOLVER=lambda t: "member:1" if t == "tok" else None
    )
    app.register_blueprint(blueprint)
    base, stop = serve(app)
    lines = []
    with httpx.Client(base_url=base) as client:
        first = client.get("/feed/tok.atom")
        cases = {
            "full answer": {},
            "304, If-None-Match": {"If-None-Match": first.headers["etag"]},
            "304, If-Modified-Since only": {"If-Modified-Since": first.headers["last-modified"]},
        }
        for name, headers in cases.items():
            times = []
            for _ in range(requests):
                started = time.perf_counter()
                answer = client.get("/feed/tok.atom", headers=headers)
                times.append((time.perf_counter() - started) * 1000)
            times.sort()
            p95 = times[int(len(times) * 0.95) - 1]
            lines.append(
                f"GET a {KEEP_ENTRIES}-entry feed, {name}: {answer.status_code}, "
                f"{len(answer.content):,} B, p50 {statistics.median(times):.1f} ms, "
                f"p95 {p95:.1f} ms"
            )
    stop()
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feeds", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--dir", help="where to write the feeds (default: a temp dir)")
    args = parser.parse_args()
    for run in (
        lambda d: [one_job_into_feeds(d, args.feeds, full=False)],
        lambda d: [one_job_into_feeds(d, args.feeds, full=True)],
        lambda d: page_latency(d, args.requests),
    ):
        folder = Path(tempfile.mkdtemp(prefix="alertd-bench-feeds-", dir=args.dir))
        try:
            for line in run(folder):
                print(line, flush=True)
        finally:
            shutil.rmtree(folder)


if __name__ == "__main__":
    main()
