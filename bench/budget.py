"""Benchmark: one request budget for every alertd process sharing a state directory.

Run it from the repository root with the project's venv:

    python bench/budget.py                 # 5 minutes, as issue 12 asks
    python bench/budget.py --seconds 60    # a shorter run
    python bench/budget.py --source DIR    # the alertd in DIR/alertd (another checkout)

Against a stand-in that allows ``--limit`` requests per minute (60, counted as the API
counts them: per client IP, a sliding 60 s of arrivals, 429 past it), with one state
directory and ``requests_per_minute`` equal to the limit (no headroom at all):

- ``alertd run``, polling every 10 s, 40 searches over 40 distinct queries, a job
  published every 3 s;
- ``alertd once --dry-run`` in a tight loop (plain ``once`` beside ``run`` is refused by
  the state directory's lock before it sends anything; a dry run reads a snapshot and
  asks the API like a real cycle);
- ``alertd preview``, ``alertd facets`` and ``alertd validate --online`` in another loop.

Then, from the stand-in's own record: the requests served, the most in any 60 s window
(by arrival), the 429s. Also the cost of the shared window's file work per request.
Markdown goes to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import collections
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from alertd.budget import SharedWindow
from alertd.market import CATEGORIES, LANGUAGES, Market
from alertd.standin import ServedRequest, StandInServer

ALERTD = [sys.executable, "-m", "alertd"]


def note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def write_config(folder: Path, url: str, limit: int) -> Path:
    """40 searches, each its own query (category × language), so a cycle has work."""
    searches = [
        f"  - name: s{index}\n    category: {category}\n    language: {language}\n"
        for index, (category, language) in enumerate(
            (c, lang) for c in CATEGORIES for lang in LANGUAGES
        )
    ][:40]
    path = folder / "alerts.yaml"
    path.write_text(
        f"api_url: {url}\nstate_dir: {folder / 'state'}\npoll_interval: 10\n"
        f"requests_per_minute: {limit}\nlog_level: INFO\nsearches:\n" + "".join(searches),
        encoding="utf-8",
    )
    return path


def loop(
    commands: list[list[str]], until: float, env: dict[str, str], tally: dict[str, int]
) -> None:
    """Run ``commands`` in turn, back to back, until ``until``; count the exits."""
    turn = 0
    while time.monotonic() < until:
        command = commands[turn % len(commands)]
        turn += 1
        name = command[3]
        try:
            done = subprocess.run(
                command,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=max(1.0, until - time.monotonic()),
                check=False,
            )
            tally[f"{name} exit {done.returncode}"] += 1
        except subprocess.TimeoutExpired:
            tally[f"{name} still waiting at the end (killed)"] += 1


def most_in_a_minute(stamps: list[float]) -> tuple[int, float]:
    """The most arrivals in any 60 s window, and where that window starts."""
    ordered = sorted(stamps)
    best, start = 0, 0.0
    right = 0
    for left, at in enumerate(ordered):
        while right < len(ordered) and ordered[right] < at + 60.0:
            right += 1
        if right - left > best:
            best, start = right - left, at
    return best, start


def endpoint(path: str) -> str:
    """``/jobs/job_1234`` as ``/jobs/{id}``; the others as they are, without the query."""
    path = path.split("?")[0]
    known = ("/jobs", "/jobs/changes", "/jobs/facets")
    return path if path in known else "/jobs/{id}"


def publisher(server: StandInServer, until: float) -> None:
    index = 0
    while time.monotonic() < until:
        category = CATEGORIES[index % len(CATEGORIES)]
        language = LANGUAGES[index % len(LANGUAGES)]
        server.market.add_job(title=f"Bench job {index}", category=category, languages=[language])
        index += 1
        time.sleep(3.0)


def file_cost(folder: Path, requests: int = 3000) -> tuple[float, float, int]:
    """(µs wall, µs CPU) per request of the shared window's file work (its start and its
    end, each a locked read and write) with the window at the API's 120, and its size."""
    now = [time.monotonic()]
    window = SharedWindow(folder / "cost" / "api-budget", 30.0, lambda: now[0])
    window.check()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(requests):
        wait, _held = window.take(120, 60.5)
        if wait > 0:
            now[0] += wait
            window.take(120, 60.5)
        window.give_back()
        now[0] += 0.4
    wall = (time.perf_counter() - wall) / requests * 1e6
    cpu = (time.process_time() - cpu) / requests * 1e6
    return wall, cpu, window.path.stat().st_size


def run(seconds: float, limit: int, source: str | None) -> None:
    folder = Path(tempfile.mkdtemp(prefix="alertd-budget-"))
    market = Market(seed=20240501)
    market.add_past_jobs(300)
    server = StandInServer(market, cache_ttl=0, rate_limit=limit).start()
    env = dict(os.environ)
    if source:
        env["PYTHONPATH"] = source
    config = write_config(folder, server.url, limit)
    log = (folder / "run.log").open("w")
    started = time.monotonic()
    until = started + seconds
    note(f"{seconds:.0f} s: run + once --dry-run loop + preview/facets/validate loop; {folder}")
    daemon = subprocess.Popen(
        [*ALERTD, "run", "-c", str(config)], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    made = folder / "state" / "api-budget" if not source else folder / "state"
    while not made.exists() and daemon.poll() is None:  # the others start beside it
        time.sleep(0.05)
    tally: collections.Counter[str] = collections.Counter()
    c = str(config)
    loops = [
        [[*ALERTD, "once", "-c", c, "--dry-run"]],
        [
            [*ALERTD, "preview", "-c", c, "s0"],
            [*ALERTD, "facets", "-c", c],
            [*ALERTD, "validate", "-c", c, "--online"],
        ],
    ]
    threads = [threading.Thread(target=loop, args=(cmds, until, env, tally)) for cmds in loops]
    threads.append(threading.Thread(target=publisher, args=(server, until)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    daemon.send_signal(signal.SIGTERM)
    daemon.wait(timeout=30)
    log.close()
    served = server.requests()
    server.stop()
    report(served, tally, folder, seconds, limit, source)


def report(
    served: list[ServedRequest],
    tally: collections.Counter[str],
    folder: Path,
    seconds: float,
    limit: int,
    source: str | None,
) -> None:
    most, _ = most_in_a_minute([r.at for r in served])
    refused = sum(1 for r in served if r.status == 429)
    paths = collections.Counter(endpoint(r.path) for r in served)
    cycles = sum(1 for line in (folder / "run.log").read_text().splitlines() if " cycle " in line)
    wall, cpu, size = file_cost(folder)
    print(f"## One budget per state directory: {seconds:.0f} s, limit {limit}/min\n")
    print(f"alertd from {source or 'this checkout'}\n")
    print(f"| requests served | most in any 60 s [≤ {limit}] | 429s [0] | run's cycles logged |")
    print("|---|---|---|---|")
    verdict = "met" if most <= limit and refused == 0 else "NOT met"
    print(f"| {len(served)} | {most} | {refused} | {cycles} | {verdict}\n")
    print("By endpoint: " + ", ".join(f"{p} {n}" for p, n in sorted(paths.items())) + "\n")
    print("Processes: " + ", ".join(f"{k}: {v}" for k, v in sorted(tally.items())) + "\n")
    print(
        f"Shared window file work per request (start + end, window at 120): "
        f"{wall:.0f} µs wall, {cpu:.0f} µs CPU; the file is {size} bytes\n"
    )
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "?",
    )
    print(
        f"Machine: nproc {os.cpu_count()}, {model}, Linux {platform.release()}, "
        f"Python {platform.python_version()}; load average at the end "
        f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--limit", type=int, default=60, help="the stand-in's and alertd's")
    parser.add_argument("--source", help="a checkout whose alertd/ the processes run")
    args = parser.parse_args()
    run(args.seconds, args.limit, args.source)


if __name__ == "__main__":
    main()
