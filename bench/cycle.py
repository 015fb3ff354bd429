"""Benchmark alertd's polling cycle against the local stand-in OpenTrain API.

Run it from the repository root with the project's venv:

    python bench/cycle.py                # 8 scenarios, ~40 s
    python bench/cycle.py --quick        # 3 small scenarios, ~10 s
    python bench/cycle.py --memory       # + a tracemalloc pass (~+30 s)
    python bench/cycle.py --profile      # only: cProfile of +50-new-jobs cycles
    python bench/cycle.py --budget-demo  # + a cycle over the 120/min budget

Every scenario runs in its own worker process (so ``ru_maxrss`` is that scenario's
peak), and each worker starts the stand-in server in a process of its own, so the
server's CPU time and memory are not charged to alertd. Per scenario, the worker:

1. primes every saved search (the first, silent cycle);
2. runs idle cycles (nothing new on the market);
3. publishes 50 new jobs and runs one cycle (alerts recorded, 20 "sent": the pipeline
   sends at most 20 per target per cycle), then one drain cycle (20 sends, nothing
   new), then drains the rest untimed;
4. for the "+history" scenarios: adds that many past (closed) jobs to the state, as
   seen ids (through ``Store.prime``) and sent outbox rows (copies of a row the store
   itself wrote), reopens the store and repeats 2-3 once on that aged state.

Each measured cycle uses a fresh ``OpenTrainClient``: the daemon polls every 5 minutes,
so its 60-second request window is empty when a cycle starts. Every default scenario
stays within the 120 requests a cycle may send without waiting; ``--budget-demo``
runs one that does not.

Store writes are counted by wrapping the store's storage instance, and ``os.fsync`` is
timed in the worker process; nothing in ``alertd/`` is changed.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import yaml

from alertd.api import OpenTrainClient
from alertd.deliver import Outcome
from alertd.market import CATEGORIES, LANGUAGES, Market, make_job, matches_query
from alertd.models import DeliveryStatus, Target, format_time, parse_job
from alertd.pipeline import CycleReport, run_once
from alertd.settings import Config, parse_config
from alertd.standin import StandInServer
from alertd.store import STATE_FILE, Store

SEED = 20240501
NEW_JOBS = 50
MIB = 1024 * 1024


@dataclass(frozen=True)
class Scenario:
    """Jobs on the market, saved searches, and how much history to age the state with."""

    jobs: int
    searches: int
    history: int = 0
    broad: int = 1  # how many of the searches have no narrowing filter (every page, every cycle)
    full: bool = True  # False: only the priming cycle and one idle cycle

    @property
    def name(self) -> str:
        text = f"{self.jobs} jobs × {self.searches} searches"
        return text + (f" (+{self.history:,} history)" if self.history else "")

    @property
    def key(self) -> str:
        return f"{self.jobs}x{self.searches}h{self.history}b{self.broad}"


FRESH_SCENARIOS = tuple(Scenario(jobs, n) for jobs in (500, 5000) for n in (1, 10, 20))
AGED_SCENARIOS = (Scenario(500, 10, history=5_000), Scenario(500, 10, history=20_000))
DEFAULT_SCENARIOS = FRESH_SCENARIOS + AGED_SCENARIOS
QUICK_SCENARIOS = (Scenario(500, 1), Scenario(500, 10), Scenario(500, 10, history=5_000))
PROFILE_SCENARIOS = (Scenario(5000, 20), Scenario(500, 10, history=20_000))
BUDGET_SCENARIO = Scenario(5000, 3, broad=3, full=False)


# -- the stand-in server, in its own process ----------------------------------


def serve(jobs: int, seed: int) -> None:
    """``--serve``: fill a market, print the URL, serve until stdin closes."""
    market = Market(seed=seed)
    start = datetime.now(UTC) - timedelta(days=2)
    for i in range(jobs):  # distinct posting times, so pages have a stable order
        posted = start + timedelta(seconds=i)
        market.clock = lambda posted=posted: posted  # type: ignore[misc]
        market.add_job()
    market.clock = lambda: datetime.now(UTC)
    server = StandInServer(market, cache_ttl=0, rate_limit=100_000).start()
    print(server.url, flush=True)
    sys.stdin.read()
    server.stop()


@contextmanager
def standin_process(jobs: int, seed: int = SEED) -> Iterator[str]:
    """The stand-in API with ``jobs`` open jobs, in a child process; yields its URL."""
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(jobs), str(seed)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        yield child.stdout.readline().strip()
    finally:
        child.stdin.close()
        child.wait(timeout=30)


# -- config -------------------------------------------------------------------


def make_config(url: str, state_dir: Path, scenario: Scenario) -> Config:
    """1 or more broad searches, the rest narrowed to one category and one language."""
    searches: list[dict[str, Any]] = []
    broad = [{}, {"payType": "PAY_PER_HOUR"}, {"q": "remote"}]  # all match every job
    for i in range(scenario.broad):
        searches.append({"name": f"broad-{i}", **broad[i % len(broad)]})
    for i in range(scenario.searches - scenario.broad):
        category, language = CATEGORIES[i % len(CATEGORIES)], LANGUAGES[i % len(LANGUAGES)]
        searches.append(
            {"name": f"{category} / {language}", "category": category, "language": language}
        )
    text = yaml.safe_dump(
        {
            "api_url": url,
            "state_dir": str(state_dir),
            "requests_per_minute": 120,
            "timezone": "UTC",
            "searches": searches,  # no notify: every alert goes to the stdout target
        },
        sort_keys=False,
    )
    return parse_config(text, "bench.yaml")


# -- instrumentation ----------------------------------------------------------


@dataclass
class Meter:
    """What one cycle spent where; reset before each cycle."""

    writes: int = 0
    write_s: float = 0.0
    written_bytes: int = 0
    fsync_s: float = 0.0
    http_s: float = 0.0
    pages: int = 0
    sends: int = 0

    def reset(self) -> None:
        for name, value in asdict(Meter()).items():
            setattr(self, name, value)


METER = Meter()


def instrument_fsync() -> None:
    """Time every ``os.fsync`` in this process (the store calls two per write)."""
    real = os.fsync

    def timed(fd: Any) -> None:
        t0 = time.perf_counter()
        real(fd)
        METER.fsync_s += time.perf_counter() - t0

    os.fsync = timed


def instrument_store(store: Store) -> None:
    """Count and time every whole-file write the store's TinyDB storage makes."""
    storage = store.db.storage
    real = storage.write
    path = store.path
    assert path is not None

    def write(data: dict[str, Any]) -> None:
        t0 = time.perf_counter()
        real(data)
        METER.write_s += time.perf_counter() - t0
        METER.writes += 1
        METER.written_bytes += path.stat().st_size

    storage.write = write  # type: ignore[method-assign]


def make_client(config: Config) -> OpenTrainClient:
    """A fresh client (an empty request window), with its page fetches timed."""
    client = OpenTrainClient(config.api_url, requests_per_minute=config.requests_per_minute)
    real = client.search_jobs

    def search_jobs(query: dict[str, str]) -> Any:
        t0 = time.perf_counter()
        result = real(query)
        METER.http_s += time.perf_counter() - t0
        METER.pages += result.pages
        return result

    client.search_jobs = search_jobs  # type: ignore[method-assign]
    return client


def no_op_sender(target: Target, title: str, body: str) -> Outcome:
    """Every target accepts at once: the cycle's own cost, without any network delivery."""
    METER.sends += 1
    return Outcome(True)


@dataclass
class Sample:
    """One measured cycle."""

    wall_s: float
    requests: int
    new_jobs: int
    sent: int
    owed: int
    writes: int
    written_mib: float
    write_s: float
    fsync_s: float
    http_s: float
    peak_mib: float | None = None


@dataclass
class Phase:
    """Repeated samples of one kind of cycle."""

    label: str
    samples: list[Sample] = field(default_factory=list)

    def median(self, name: str) -> float:
        return float(statistics.median(getattr(s, name) for s in self.samples))


@dataclass(frozen=True)
class Options:
    """How a worker measures."""

    repeats: int = 3  # samples of each cheap cycle kind
    aged_repeats: int = 1  # samples of each cycle kind on an aged state (slow by design)
    memory: bool = False  # tracemalloc on (slows everything: timings are not reported)
    profile: bool = False  # cProfile the first +50-new-jobs cycle of each state


class Bench:
    """One scenario, in this (worker) process."""

    def __init__(self, scenario: Scenario, options: Options) -> None:
        self.scenario = scenario
        self.options = options
        self.phases: dict[str, Phase] = {}
        self.facts: dict[str, Any] = {}
        self.profiles: dict[str, str] = {}

    def cycle(self, config: Config, store: Store, label: str | None) -> CycleReport:
        """Run one cycle; record it under ``label`` (None: untimed housekeeping)."""
        client = make_client(config)
        profiler = None
        if self.options.profile and label and "new" in label and label not in self.profiles:
            profiler = cProfile.Profile()
        METER.reset()
        if self.options.memory:
            tracemalloc.reset_peak()
        t0 = time.perf_counter()
        if profiler:
            profiler.enable()
        report = run_once(config, client, store, no_op_sender)
        if profiler:
            profiler.disable()
        wall = time.perf_counter() - t0
        client.close()
        if not report.ok:
            raise SystemExit(f"cycle failed: {report.summary()}")
        if profiler and label:
            out = io.StringIO()
            stats = pstats.Stats(profiler, stream=out)
            stats.sort_stats("tottime").print_stats(15)
            self.profiles[label] = f"wall {wall:.2f} s (profiled)\n" + out.getvalue()
        if label is not None:
            sample = Sample(
                wall_s=wall,
                requests=report.requests,
                new_jobs=report.new_jobs,
                sent=report.sent,
                owed=report.owed,
                writes=METER.writes,
                written_mib=METER.written_bytes / MIB,
                write_s=METER.write_s,
                fsync_s=METER.fsync_s,
                http_s=METER.http_s,
                peak_mib=tracemalloc.get_traced_memory()[1] / MIB if self.options.memory else None,
            )
            self.phases.setdefault(label, Phase(label)).samples.append(sample)
        return report

    def drain(self, config: Config, store: Store) -> None:
        while self.cycle(config, store, None).owed:
            pass

    def steady_phases(
        self, config: Config, store: Store, url: str, repeats: int, prefix: str, suffix: str
    ) -> None:
        """Idle cycles; +50-new-jobs cycles, each followed by one drain cycle and the rest."""
        for _ in range(repeats):
            self.cycle(config, store, f"{prefix}idle{suffix}")
        for _ in range(repeats):
            publish(url, NEW_JOBS)
            report = self.cycle(config, store, f"{prefix}+{NEW_JOBS} new{suffix}")
            if report.owed:
                self.cycle(config, store, f"{prefix}drain{suffix}")
            self.drain(config, store)

    def run(self) -> dict[str, Any]:
        scenario, options = self.scenario, self.options
        instrument_fsync()
        self.facts["rss_baseline_mib"] = max_rss_mib()
        with (
            tempfile.TemporaryDirectory(prefix="alertd-bench-") as tmp,
            standin_process(scenario.jobs) as url,
        ):
            state_dir = Path(tmp) / "state"
            config = make_config(url, state_dir, scenario)
            if options.memory:
                tracemalloc.start()
            store = Store.open(state_dir)
            instrument_store(store)
            # With history, the fresh cycles only set the state up (and are not reported).
            prefix = "setup: " if scenario.history else ""
            self.cycle(config, store, f"{prefix}prime")
            self.facts["size_primed"] = state_size(state_dir)
            if not scenario.full:
                self.cycle(config, store, "idle")
            else:
                repeats = 1 if scenario.history else options.repeats
                self.steady_phases(config, store, url, repeats, prefix, "")
            self.facts["size_fresh"] = state_size(state_dir)
            self.facts["rows_fresh"] = row_counts(store, config)
            if scenario.history:
                age_state(store, config, scenario.history)
                store.close()
                self.facts["size_aged"] = state_size(state_dir)
                t0 = time.perf_counter()
                store = Store.open(state_dir)
                self.facts["open_aged_s"] = time.perf_counter() - t0
                instrument_store(store)
                self.facts["rows_aged"] = row_counts(store, config)
                if options.memory:  # tracemalloc makes whole-file rewrites ~10x slower
                    self.cycle(config, store, "idle (aged)")
                else:
                    self.steady_phases(config, store, url, options.aged_repeats, "", " (aged)")
                self.facts["size_aged_end"] = state_size(state_dir)
            store.close()
        self.facts["rss_peak_mib"] = max_rss_mib()
        return {
            "scenario": asdict(scenario),
            "phases": {k: [asdict(s) for s in p.samples] for k, p in self.phases.items()},
            "facts": self.facts,
            "profiles": self.profiles,
        }


def max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def state_size(state_dir: Path) -> int:
    return (state_dir / STATE_FILE).stat().st_size


def row_counts(store: Store, config: Config) -> dict[str, int]:
    """Seen ids summed over the searches, and outbox rows (whatever the table layout)."""
    seen = sum(len(store.seen_ids(search.name)) for search in config.searches)
    return {"seen": seen, "outbox": len(store.outbox)}


def publish(url: str, count: int) -> None:
    """Post ``count`` new jobs through the stand-in's control interface."""
    with httpx.Client(base_url=url, trust_env=False) as http:
        for _ in range(count):
            http.post("/_control/jobs", json={}).raise_for_status()


def age_state(store: Store, config: Config, history: int) -> None:
    """Add ``history`` past (now closed) jobs, posted over the last 150 days, each one
    seen by every search it matches and its alert sent.

    Seen ids go in through ``Store.prime`` (one write per search), so they take whatever
    shape the store gives them. Sent outbox rows are copies of a sent row the store
    itself wrote (same keys, same ``job`` keys), inserted in one write. 150 days stays
    inside the pipeline's retention of delivered rows, so nothing is pruned at once.
    """
    template = next(r for r in store.outbox.all() if r["status"] == DeliveryStatus.SENT)
    rng = random.Random(SEED + 1)
    now = datetime.now(UTC)
    start = now - timedelta(days=150)
    step = timedelta(days=150) / history
    seen: dict[str, list[str]] = {s.name: [] for s in config.searches}
    rows: list[dict[str, Any]] = []
    for i in range(history):
        posted = start + step * i
        raw = make_job(posted, rng)
        record = parse_job(raw).job.to_record()
        names = [s.name for s in config.searches if matches_query(raw, s.query())]
        stamp = format_time(posted + timedelta(minutes=3))
        for name in names:
            seen[name].append(raw["id"])
        if names:
            rows.append(
                {
                    **template,
                    "job_id": raw["id"],
                    "job": {key: record.get(key) for key in template["job"]},
                    "searches": names,
                    "created_at": stamp,
                    "next_attempt_at": stamp,
                    "last_attempt_at": stamp,
                    "sent_at": stamp,
                }
            )
    for search in config.searches:
        store.prime(search, seen[search.name], now)
    store.outbox.insert_multiple(rows)


# -- the orchestrator ---------------------------------------------------------


def run_worker(scenario: Scenario, options: Options) -> dict[str, Any]:
    """Run one scenario in a fresh interpreter (its own ``ru_maxrss``) and return its results."""
    args = [sys.executable, __file__, "--worker", json.dumps([asdict(scenario), asdict(options)])]
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    if done.returncode:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"worker for {scenario.name} failed")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def fmt_s(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def fmt_size(size: float) -> str:
    return f"{size / 1024:.0f} KiB" if size < MIB else f"{size / MIB:.1f} MiB"


def reported(result: dict[str, Any]) -> dict[str, Phase]:
    return {
        label: Phase(label, [Sample(**s) for s in raw])
        for label, raw in result["phases"].items()
        if not label.startswith("setup: ")
    }


def cycle_table(results: list[dict[str, Any]], memory: dict[str, dict[str, Any]]) -> str:
    """One row per (scenario, cycle kind): medians over the samples."""
    head = (
        "| scenario | cycle | n | wall (median) | requests | new | sent | store writes "
        "| MiB written | in writes (fsync) | in HTTP | tracemalloc peak |\n"
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n"
    )
    rows = []
    for result in results:
        scenario = Scenario(**result["scenario"])
        mem = memory.get(scenario.key, {}).get("phases", {})
        for label, phase in reported(result).items():
            peak = [s["peak_mib"] for s in mem.get(label, []) if s["peak_mib"] is not None]
            rows.append(
                f"| {scenario.name} | {label} | {len(phase.samples)} "
                f"| {fmt_s(phase.median('wall_s'))} | {phase.median('requests'):.0f} "
                f"| {phase.median('new_jobs'):.0f} | {phase.median('sent'):.0f} "
                f"| {phase.median('writes'):.0f} | {phase.median('written_mib'):.1f} "
                f"| {fmt_s(phase.median('write_s'))} ({fmt_s(phase.median('fsync_s'))}) "
                f"| {fmt_s(phase.median('http_s'))} "
                f"| {f'{max(peak):.1f} MiB' if peak else '–'} |"
            )
    return head + "\n".join(rows)


def state_table(results: list[dict[str, Any]]) -> str:
    """The state file and the process's memory, per scenario."""
    head = (
        "| scenario | alertd.json after prime | after the fresh cycles | seen ids / outbox rows "
        "| aged: seen ids / outbox rows | aged: alertd.json | aged: Store.open | peak RSS |\n"
        "|---|--:|--:|--:|--:|--:|--:|--:|\n"
    )
    rows = []
    for result in results:
        facts = result["facts"]
        fresh, aged = facts["rows_fresh"], facts.get("rows_aged")
        aged_cols = (
            f"{aged['seen']:,} / {aged['outbox']:,} | {fmt_size(facts['size_aged_end'])} "
            f"| {fmt_s(facts['open_aged_s'])}"
            if aged
            else "– | – | –"
        )
        rows.append(
            f"| {Scenario(**result['scenario']).name} | {fmt_size(facts['size_primed'])} "
            f"| {fmt_size(facts['size_fresh'])} | {fresh['seen']:,} / {fresh['outbox']:,} "
            f"| {aged_cols} | {facts['rss_peak_mib']:.0f} MiB |"
        )
    return head + "\n".join(rows)


def machine() -> str:
    cpu = "unknown"
    with open("/proc/cpuinfo", encoding="utf-8") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (
        f"{cpu}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}"
    )


def revision() -> str:
    """The commit measured (``-dirty`` when alertd/ has uncommitted changes)."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "log", "-1", "--format=%h %cd", "--date=iso"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "alertd"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown revision"
    return f"commit {head}" + (" (alertd/ modified)" if dirty else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="three small scenarios (~10 s)")
    parser.add_argument("--repeats", type=int, default=3, help="samples per cheap cycle kind")
    parser.add_argument(
        "--memory", action="store_true", help="add a tracemalloc pass per scenario (~+30 s)"
    )
    parser.add_argument(
        "--profile", action="store_true", help="only: cProfile the +50-new-jobs cycles"
    )
    parser.add_argument(
        "--budget-demo", action="store_true", help="also 5,000 jobs × 3 broad searches"
    )
    parser.add_argument("--serve", nargs=2, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.serve:
        serve(*args.serve)
        return
    if args.worker:
        scenario_fields, option_fields = json.loads(args.worker)
        bench = Bench(Scenario(**scenario_fields), Options(**option_fields))
        print(json.dumps(bench.run()))
        return

    started = time.perf_counter()
    print(f"## alertd cycle benchmark\n\nMachine: {machine()}  \nalertd: {revision()}\n")
    if args.profile:
        for scenario in PROFILE_SCENARIOS:
            print(f"profiling {scenario.name} ...", file=sys.stderr, flush=True)
            result = run_worker(scenario, Options(repeats=1, profile=True))
            for label, text in result["profiles"].items():
                if label.startswith("setup: "):
                    continue
                print(f"### cProfile: {scenario.name}, {label}, top 15 by own time\n")
                print(f"```\n{text.strip()}\n```\n")
        return

    scenarios = QUICK_SCENARIOS if args.quick else DEFAULT_SCENARIOS
    options = Options(repeats=args.repeats)
    results: list[dict[str, Any]] = []
    memory: dict[str, dict[str, Any]] = {}
    for scenario in scenarios:
        t0 = time.perf_counter()
        print(f"running {scenario.name} ...", end="", file=sys.stderr, flush=True)
        results.append(run_worker(scenario, options))
        print(f" {time.perf_counter() - t0:.0f} s", end="", file=sys.stderr, flush=True)
        if args.memory:
            t0 = time.perf_counter()
            memory[scenario.key] = run_worker(scenario, Options(1, 1, memory=True))
            print(f", memory pass {time.perf_counter() - t0:.0f} s", end="", file=sys.stderr)
        print(file=sys.stderr)
    if args.budget_demo:
        print(f"running {BUDGET_SCENARIO.name} (~2 minutes) ...", file=sys.stderr, flush=True)
        results.append(run_worker(BUDGET_SCENARIO, Options(1, 1)))
    print(cycle_table(results, memory))
    print()
    print(state_table(results))
    print(f"\n(total benchmark time {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
