"""Benchmark alertd's feed-driven cycle for a community: many saved searches, one API.

Run it from the repository root with the project's venv:

    python bench/community.py            # A (10 … 10,000 searches), then B and C live
    python bench/community.py --quick    # small sizes, short live runs (~5 min)
    python bench/community.py --only scale|live

A. Scaling: per size, a stand-in (own process) with a 5,000-job market; a worker process
   primes every search, a fresh worker then measures quiet cycles, one busy cycle
   (50 published, 20 updated, 10 closed) and the follow-up cycles that drain it.
B. Budget truth: ``alertd run`` against a stand-in limited to 120/min, as it counts them.
C. Latency: ``alertd run`` with 1,000 searches delivering to a local webhook sink.

Markdown tables go to stdout, progress to stderr. Nothing in ``alertd/`` is changed.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import itertools
import json
import math
import os
import platform
import pstats
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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import yaml

from alertd.api import OpenTrainClient, SearchResult
from alertd.config import Config, load_config, settle_heap
from alertd.deliver import Outcome
from alertd.market import CATEGORIES, LANGUAGES, Market, make_job, matches_query
from alertd.models import PAY_TYPES, Target
from alertd.pipeline import CycleReport, run_once
from alertd.render import Message
from alertd.standin import StandInServer
from alertd.store import Store

SEED = 20240501
MARKET_JOBS = 5000
FAST = 10**6  # requests per minute for the unpaced priming client and stand-ins
VOCAB = (
    "audio",
    "medical",
    "retail",
    "legal",
    "finance",
    "gaming",
    "street",
    "chatbot",
    "subtitle",
    "invoice",
)
COUNTRIES = (
    "US",
    "GB",
    "DE",
    "ES",
    "MX",
    "IN",
    "BR",
    "FR",
    "IT",
    "NL",
    "PL",
    "PT",
    "CA",
    "AU",
    "JP",
    "KR",
    "PH",
    "NG",
    "KE",
    "ZA",
)  # 20
VALUES: dict[str, tuple[str, ...]] = {
    "q": VOCAB,
    "category": CATEGORIES,
    "language": LANGUAGES,
    "country": COUNTRIES,
    "payType": PAY_TYPES,
}
EXACT_SHAPES = (
    ("category", "language"),
    ("category", "language", "country"),
    ("category", "language", "payType"),
    ("category", "country", "payType"),
    ("language", "country", "payType"),
)
Q_SHAPES = (
    ("q", "category", "language"),
    ("q", "category", "payType"),
    ("q", "language", "country"),
)
AGE_PER_SEARCH = 10  # past (closed) job ids added to each search's seen set
BUSY = {"publish": 50, "update": 20, "close": 10}
QUIET_CYCLES = 5
MIB = 1024 * 1024


def say(message: str) -> None:
    """Progress, on stderr."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- the market and the searches ----------------------------------------------------


def job_fields(rng: random.Random, **fixed: Any) -> dict[str, Any]:
    """Fields of a generated job: two vocabulary words in the title, one language,
    no country (20 %: open to all) or one of 20, one of three pay types."""
    words = rng.sample(VOCAB, 2)
    language = fixed.pop("language", None) or rng.choice(LANGUAGES)
    pay_type = fixed.pop("payType", None) or rng.choice(PAY_TYPES)
    country = fixed.pop("country", None) or (None if rng.random() < 0.2 else rng.choice(COUNTRIES))
    word = fixed.pop("q", None)
    if word and word not in words:
        words[0] = word
    tag = fixed.pop("tag", "")
    return {
        "title": f"{words[0].title()} {words[1]} labelling ({language}){tag}",
        "category": fixed.pop("category", None) or rng.choice(CATEGORIES),
        "languages": [language],
        "countries": [country] if country else [],
        "pay": {"paymentType": pay_type, "currency": "USD", "hourlyMin": 15, "hourlyMax": 25},
    }


def query_pool(shapes: tuple[tuple[str, ...], ...]) -> list[dict[str, str]]:
    """Every query of the given shapes (filter names) over the market's values."""
    pool = []
    for shape in shapes:
        for values in itertools.product(*(VALUES[name] for name in shape)):
            pool.append(dict(zip(shape, values, strict=True)))
    return pool


def make_queries(distinct: int, rng: random.Random) -> list[dict[str, str]]:
    """``distinct`` queries: a fifth with a free-text word (at least one when >= 2)."""
    with_q = max(1, distinct // 5) if distinct >= 2 else 0
    return rng.sample(query_pool(EXACT_SHAPES), distinct - with_q) + rng.sample(
        query_pool(Q_SHAPES), with_q
    )


def make_searches(count: int, notify: Callable[[str], str], seed: int) -> list[dict[str, Any]]:
    """``count`` saved searches over ``count // 5`` distinct queries, each with its target."""
    rng = random.Random(seed)
    queries = make_queries(max(1, count // 5), rng)
    specs = []
    for index in range(count):
        query = queries[index] if index < len(queries) else rng.choice(queries)
        name = f"s{index:05d}"
        specs.append({"name": name, **query, "notify": [notify(name)]})
    return specs


def spec_query(spec: dict[str, Any]) -> dict[str, str]:
    """A search spec's API filters (name and notify left out)."""
    return {k: v for k, v in spec.items() if k not in ("name", "notify")}


def query_key(query: dict[str, str]) -> str:
    """The key alertd groups identical searches by (``plan.query_key``)."""
    return json.dumps(query, sort_keys=True, separators=(",", ":"))


def write_config(path: Path, url: str, specs: list[dict[str, Any]], **settings: Any) -> Path:
    """A config file for the stand-in at ``url`` with these searches."""
    doc = {"api_url": url, "state_dir": str(path.parent / "state"), "log_level": "INFO"}
    doc.update(settings)
    doc["searches"] = specs
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


# -- the stand-in, in a child process ---------------------------------------------------


def serve(args: dict[str, Any]) -> None:
    """Child process: fill a market, serve it, dump its jobs, run until stdin closes."""
    market = Market(seed=args["seed"])
    rng = random.Random(args["seed"])
    for _ in range(args["jobs"]):
        market.add_job(**job_fields(rng))
    server = StandInServer(market, cache_ttl=args["cache_ttl"], rate_limit=args["rate_limit"])
    server.start()
    if args.get("dump"):
        Path(args["dump"]).write_text(json.dumps(market.jobs), encoding="utf-8")
    print(server.url, flush=True)
    sys.stdin.read()
    server.stop()


@contextmanager
def standin(cache_ttl: float, rate_limit: int, dump: Path | None = None) -> Iterator[str]:
    """A stand-in API in a child process; yields its URL."""
    args = {"seed": SEED, "jobs": MARKET_JOBS, "cache_ttl": cache_ttl, "rate_limit": rate_limit}
    args["dump"] = str(dump) if dump else None
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", json.dumps(args)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        yield child.stdout.readline().strip()
    finally:
        child.stdin.close()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


# -- worker processes: alertd's own cost -------------------------------------------------


def record_send(target: Target, message: Message) -> Outcome:
    """A sender that accepts everything and sends nothing."""
    return Outcome(True)


class CountingClient(OpenTrainClient):
    """The real client, remembering how many pages each asked query took."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pages: dict[str, int] = {}

    def search_jobs(self, query: dict[str, str]) -> SearchResult:
        result = super().search_jobs(query)
        self.pages[query_key(query)] = self.pages.get(query_key(query), 0) + result.pages
        return result


def fast_client(config: Config) -> CountingClient:
    """An unpaced client: pacing adds only waiting; the per-cycle cap is the config's."""
    return CountingClient(config.api_url, requests_per_minute=FAST, api_limit=FAST)


def cycle(
    config: Config, store: Store, client: OpenTrainClient, profiler: cProfile.Profile | None = None
) -> tuple[CycleReport, float, float]:
    """One ``run_once`` (under ``profiler`` if given): (report, CPU seconds, wall seconds)."""
    cpu, wall = time.process_time(), time.perf_counter()
    if profiler is not None:
        profiler.enable()
    report = run_once(config, client, store, record_send)
    if profiler is not None:
        profiler.disable()
    return report, time.process_time() - cpu, time.perf_counter() - wall


def prime_worker(args: dict[str, Any]) -> dict[str, Any]:
    """Prime every search (unpaced), then age the state with past seen ids."""
    config = load_config(Path(args["config"]))
    started, requests, cycles = time.perf_counter(), 0, 0
    with Store.open(config.state_dir) as store, fast_client(config) as client:
        while cycles < 50:
            report, _, _ = cycle(config, store, client)
            cycles, requests = cycles + 1, requests + report.requests
            if not report.primed:
                break
        now = datetime.now(UTC)
        for index, search in enumerate(config.searches):
            past = (f"past_{index % 997:03d}_{k}" for k in range(AGE_PER_SEARCH))
            store.prime(search, past, now)
        store.commit()
        seen = sum(len(state.seen) for state in store.searches.values())
        per_search = sorted(len(s.seen) - AGE_PER_SEARCH for s in store.searches.values())
    return {
        "prime_s": time.perf_counter() - started,
        "prime_requests": requests,
        "prime_cycles": cycles,
        "seen": seen,
        "matches_median": per_search[len(per_search) // 2],
        "matches_p10_p90": [per_search[len(per_search) // 10], per_search[-len(per_search) // 10]],
        "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def quiet_cycles(config: Config, store: Store) -> dict[str, Any]:
    """Quiet cycles (nothing changed), each with a fresh client paced at the config's budget."""
    requests, cpus, walls = [], [], []
    for _ in range(QUIET_CYCLES):
        with OpenTrainClient(config.api_url, requests_per_minute=config.requests_per_minute) as c:
            report, cpu, wall = cycle(config, store, c)
        requests.append(report.requests)
        cpus.append(cpu)
        walls.append(wall)
    result = {"quiet_requests": requests, "quiet_cpu": statistics.median(cpus)}
    result["quiet_wall"] = statistics.median(walls)
    if result["quiet_cpu"] > 0.25:
        result["quiet_profile"] = profile_quiet(config, store)
    return result


def profile_quiet(config: Config, store: Store) -> str:
    """cProfile of one more quiet cycle: the top entries by cumulative and own time."""
    profiler = cProfile.Profile(time.process_time)
    with OpenTrainClient(config.api_url, requests_per_minute=config.requests_per_minute) as c:
        profiler.runcall(run_once, config, c, store, record_send)
    return profile_text(profiler)


def profile_text(profiler: cProfile.Profile) -> str:
    """The top entries of a profile, by cumulative and by own time."""
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("cumulative").print_stats(18)
    stats.sort_stats("tottime").print_stats(25)
    return out.getvalue()


def replay(url: str, plan: dict[str, Any]) -> None:
    """Make the busy cycle's market changes through the control API."""
    with httpx.Client(base_url=url, timeout=30) as http:
        for fields in plan["publish"]:
            http.post("/_control/jobs", json=fields).raise_for_status()
        for job_id, fields in plan["update"]:
            http.post(f"/_control/jobs/{job_id}", json=fields).raise_for_status()
        for job_id in plan["close"]:
            http.post(f"/_control/jobs/{job_id}/close").raise_for_status()


def busy_cycles(
    config: Config, store: Store, plan: dict[str, Any], profiler: cProfile.Profile | None
) -> dict[str, Any]:
    """Replay the events, run the busy cycle, then follow-ups until nothing waits or is owed."""
    replay(config.api_url, plan)
    written, client = store.bytes_written, fast_client(config)
    report, cpu, wall = cycle(config, store, client, profiler)
    busy = {"requests": report.requests, "jobs_read": report.jobs_read, "asked": report.asked}
    busy |= {"events": report.events, "new": report.new_jobs, "sent": report.sent, "cpu": cpu}
    busy |= {"wall": wall, "summary": report.summary()}
    follow = {"cycles": 0, "requests": 0, "sent": 0, "new": 0, "jobs_read": 0}
    while (report.waiting or report.owed) and follow["cycles"] < 30:
        report, _, _ = cycle(config, store, client)
        follow["cycles"] += 1
        follow["requests"] += report.requests
        follow["sent"] += report.sent
        follow["new"] += report.new_jobs
        follow["jobs_read"] += report.jobs_read
    follow |= {"waiting": report.waiting, "owed": report.owed}
    client.close()
    bytes_delta = store.bytes_written - written
    return {"busy": busy, "follow": follow, "bytes": bytes_delta, "pages": client.pages}


def measure_worker(args: dict[str, Any]) -> dict[str, Any]:
    """A fresh process on the primed state: quiet cycles, then the busy cycle and its drain."""
    config = load_config(Path(args["config"]))
    plan = json.loads(Path(args["plan"]).read_text(encoding="utf-8"))
    with Store.open(config.state_dir) as store:
        settle_heap()  # as `alertd run` and `once` do before their first cycle
        result = quiet_cycles(config, store)
        # CPU time, not wall: on a shared machine, waiting for a core is not alertd's cost.
        profiler = cProfile.Profile(time.process_time) if args.get("profile") else None
        result |= busy_cycles(config, store, plan, profiler)
        if profiler is not None:
            result["busy_profile"] = profile_text(profiler)
    files = [p for p in config.state_dir.iterdir() if p.is_file()]
    result["state_bytes"] = sum(p.stat().st_size for p in files)
    result["state_files"] = {p.name: p.stat().st_size for p in files}
    result["rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def run_worker(kind: str, args: dict[str, Any], script: str = __file__) -> dict[str, Any]:
    """Run ``script``'s worker in a fresh process; its result is its last stdout line."""
    out = subprocess.run(
        [sys.executable, script, "--worker", json.dumps({"kind": kind, **args})],
        stdout=subprocess.PIPE,
        text=True,
        check=True,
        timeout=1800,
    ).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def timed_child(argv: list[str], timeout: float = 120) -> tuple[float, float, int, float]:
    """Run a command: (wall seconds, CPU seconds user+sys, exit status, peak RSS MiB)."""
    started = time.perf_counter()
    child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    timer = threading.Timer(timeout, child.kill)
    timer.start()
    _, status, usage = os.wait4(child.pid, 0)
    timer.cancel()
    wall = time.perf_counter() - started
    return wall, usage.ru_utime + usage.ru_stime, status, usage.ru_maxrss / 1024


# -- A: scaling ---------------------------------------------------------------------------


def make_plan(jobs: dict[str, dict[str, Any]], rng: random.Random) -> dict[str, Any]:
    """The busy cycle's events: new jobs, edits (new category and title) and closures."""
    picked = rng.sample(sorted(jobs), BUSY["update"] + BUSY["close"])
    updates = []
    for job_id in picked[: BUSY["update"]]:
        fresh = job_fields(rng, language=jobs[job_id]["languages"][0])
        others = [c for c in CATEGORIES if c != jobs[job_id]["category"]]
        updates.append([job_id, {"title": fresh["title"], "category": rng.choice(others)}])
    publish = [job_fields(rng) for _ in range(BUSY["publish"])]
    return {"publish": publish, "update": updates, "close": picked[BUSY["update"] :]}


def affected(
    plan: dict[str, Any], jobs: dict[str, dict[str, Any]], queries: list[dict[str, str]]
) -> tuple[set[str], int]:
    """Distinct queries whose listing the events change, and the pages they now take."""
    now = datetime.now(UTC)
    rng = random.Random(SEED)
    before = [jobs[job_id] for job_id, _ in plan["update"]] + [jobs[i] for i in plan["close"]]
    after = [{**jobs[job_id], **fields} for job_id, fields in plan["update"]]
    after += [make_job(now, rng, **fields) for fields in plan["publish"]]
    touched = [q for q in queries if any(matches_query(j, q) for j in before + after)]
    market = dict(jobs)
    market.update({j["id"]: j for j in after})
    for job_id in plan["close"]:
        market[job_id] = {**jobs[job_id], "status": "CLOSED"}
    pages = 0
    for query in touched:
        listed = sum(1 for job in market.values() if matches_query(job, query))
        pages += max(1, math.ceil(listed / 100))
    return {query_key(q) for q in touched}, pages


def scale_size(searches: int, work: Path, profile: bool = False) -> dict[str, Any]:
    """Prime, measure and validate one size, each alertd part in a fresh process."""
    work.mkdir(parents=True, exist_ok=True)
    dump = work / "market.json"
    specs = make_searches(searches, lambda name: f"json://127.0.0.1:9/{name}", SEED + searches)
    queries = list({query_key(spec_query(s)): spec_query(s) for s in specs}.values())
    with standin(cache_ttl=0, rate_limit=FAST, dump=dump) as url:
        config = write_config(
            work / "alerts.yaml", url, specs, poll_interval="5m", requests_per_minute=120
        )
        jobs = json.loads(dump.read_text(encoding="utf-8"))
        plan = make_plan(jobs, random.Random(SEED + 1))
        (work / "plan.json").write_text(json.dumps(plan), encoding="utf-8")
        say(f"A {searches}: priming {len(queries)} distinct queries")
        result = {"searches": searches, "queries": len(queries)}
        result["prime"] = run_worker("prime", {"config": str(config)})
        say(f"A {searches}: measuring")
        result["measure"] = run_worker(
            "measure", {"config": str(config), "plan": str(work / "plan.json"), "profile": profile}
        )
        keys, pages = affected(plan, jobs, queries)
        result["affected"], result["affected_pages"] = len(keys), pages
        asked = set(result["measure"]["pages"])
        result["asked_not_affected"] = len(asked - keys)
        validate = [sys.executable, "-m", "alertd", "validate", "-c", str(config)]
        result["validate"] = timed_child(validate)
        # The daemon itself, not a bench worker: one quiet `alertd once` on the aged state.
        once = [sys.executable, "-m", "alertd", "once", "-c", str(config)]
        result["once"] = timed_child(once)
    return result


# -- B and C: the real daemon, live --------------------------------------------------------


@contextmanager
def alertd_run(config: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``alertd run -c config`` as a subprocess, logging to ``log``; stopped by SIGTERM."""
    with log.open("wb") as out:
        child = subprocess.Popen(
            [sys.executable, "-m", "alertd", "run", "-c", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            yield child
        finally:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def max_in_window(times: list[float], span: float = 60.0) -> int:
    """The most requests in any ``span``-second window (the stand-in's own count)."""
    times, best, first = sorted(times), 0, 0
    for index, moment in enumerate(times):
        while moment - times[first] >= span:
            first += 1
        best = max(best, index - first + 1)
    return best


def budget_run(rpm: int, seconds: float, work: Path) -> dict[str, Any]:
    """B: ``alertd run`` at ``rpm`` against a stand-in limited to 120/min, jobs published
    every 2 s; the stand-in's record of every request it served."""
    work.mkdir(parents=True, exist_ok=True)
    specs = make_searches(1500, lambda name: f"json://127.0.0.1:9/{name}", SEED + rpm)
    rng, published = random.Random(SEED + rpm), 0
    with standin(cache_ttl=0, rate_limit=120) as url:
        config = write_config(
            work / "alerts.yaml", url, specs, poll_interval="30s", requests_per_minute=rpm
        )
        say(f"B {rpm}/min: alertd run for {seconds:.0f} s")
        with alertd_run(config, work / "alertd.log"), httpx.Client(base_url=url) as http:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                http.post("/_control/jobs", json=job_fields(rng)).raise_for_status()
                published += 1
                time.sleep(2.0)
        served = httpx.get(f"{url}/_control/requests", timeout=30).json()["requests"]
    times = [r["at"] for r in served]
    log = (work / "alertd.log").read_text(errors="replace")
    cycles = len(re.findall(r" INFO cycle \d+ in ", log)) + len(
        re.findall(r" WARNING cycle \d+ in ", log)
    )
    return {
        "rpm": rpm,
        "seconds": seconds,
        "requests": len(served),
        "max_60s": max_in_window(times),
        "429s": sum(1 for r in served if r["status"] == 429),
        "published": published,
        "log_cycles": cycles,
        "span": (max(times) - min(times)) if times else 0.0,
    }


class Sink(ThreadingHTTPServer):
    """A local webhook: every POST's arrival time, path and body."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), SinkHandler)
        self.posts: list[tuple[float, str, str]] = []
        self.lock = threading.Lock()
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class SinkHandler(BaseHTTPRequestHandler):
    """Timestamps each POST on arrival and answers 200."""

    server: Sink

    def do_POST(self) -> None:
        arrived = time.time()
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.server.lock:
            self.server.posts.append((arrived, self.path, body.decode(errors="replace")))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def publish_for(url: str, specs: list[dict[str, Any]], seconds: float) -> list[dict[str, Any]]:
    """C: publish, at random moments (every 15 s on average), a job one search matches."""
    rng, sent = random.Random(SEED + 7), []
    deadline = time.monotonic() + seconds
    with httpx.Client(base_url=url, timeout=30) as http:
        while time.monotonic() < deadline:
            time.sleep(min(rng.expovariate(1 / 15), max(0.0, deadline - time.monotonic())))
            spec = rng.choice(specs)
            query = spec_query(spec)
            ref = f"ref{len(sent):05d}"
            fields = job_fields(rng, tag=f" {ref}", **query)
            at = time.time()
            http.post("/_control/jobs", json=fields).raise_for_status()
            sent.append({"ref": ref, "at": at, "name": spec["name"], "q": "q" in query})
    return sent


def delivered_at(sink: Sink, pub: dict[str, Any]) -> float | None:
    """When the chosen search's target first received the published job, if it did."""
    with sink.lock:
        times = [
            t for t, path, body in sink.posts if path == f"/{pub['name']}" and pub["ref"] in body
        ]
    return min(times) if times else None


def latency_run(cache_ttl: float, seconds: float, grace: float, work: Path) -> dict[str, Any]:
    """C: 1,000 searches primed, then ``alertd run`` (60 s polls, 60/min) delivering to a
    local webhook while jobs are published; publication → delivery per job."""
    work.mkdir(parents=True, exist_ok=True)
    sink = Sink()
    specs = make_searches(1000, lambda n: f"json://127.0.0.1:{sink.port}/{n}", SEED + 1000)
    with standin(cache_ttl=cache_ttl, rate_limit=FAST) as url:
        config = write_config(
            work / "alerts.yaml", url, specs, poll_interval=60, requests_per_minute=60
        )
        say(f"C cache {cache_ttl:.0f}s: priming 1,000 searches")
        run_worker("prime", {"config": str(config)})
        say(f"C cache {cache_ttl:.0f}s: alertd run, publishing for {seconds:.0f} s")
        with alertd_run(config, work / "alertd.log"):
            pubs = publish_for(url, specs, seconds)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and any(delivered_at(sink, p) is None for p in pubs):
                time.sleep(2)
    sink.shutdown()
    for pub in pubs:
        arrived = delivered_at(sink, pub)
        pub["latency"] = math.inf if arrived is None else arrived - pub["at"]
    return {"cache_ttl": cache_ttl, "seconds": seconds, "grace": grace, "pubs": pubs}


# -- reporting ------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def scale_tables(rows: list[dict[str, Any]]) -> str:
    """Markdown tables for A."""
    out = [
        "| searches | distinct queries | matches per search (median, p10–p90) | seen ids "
        "| requests per quiet cycle [1] | CPU per quiet cycle [<1 s] | wall | "
        "peak RSS, `alertd once` [<150 MB] | peak RSS, measuring worker | "
        "peak RSS, priming worker | `alertd validate` wall [<2 s] / CPU | state on disk |",
        "|" + "---|" * 12,
    ]
    for r in rows:
        p, m = r["prime"], r["measure"]
        wall, cpu = r["validate"][:2]
        once = f"{r['once'][3]:.0f} MiB" if "once" in r else "-"
        out.append(
            f"| {r['searches']:,} | {r['queries']:,} | {p['matches_median']} "
            f"({p['matches_p10_p90'][0]}–{p['matches_p10_p90'][1]}) | {p['seen']:,} "
            f"| {'/'.join(map(str, m['quiet_requests']))} | {m['quiet_cpu'] * 1000:.0f} ms "
            f"| {m['quiet_wall'] * 1000:.0f} ms | {once} | {m['rss_mib']:.0f} MiB "
            f"| {p['rss_mib']:.0f} MiB "
            f"| {wall:.2f} s / {cpu:.2f} s | {m['state_bytes'] / MIB:.1f} MiB |"
        )
    return "\n".join(out)


def busy_tables(rows: list[dict[str, Any]]) -> str:
    """Markdown table for A's busy cycle and its drain."""
    out = [
        "| searches | busy cycle: requests | jobs read | queries asked (pages) "
        "| queries the events could affect (their pages) | asked beyond those "
        "| until drained: cycles / requests / jobs read | bound: feed reads + jobs read + "
        "affected pages | within bound | new matches | alerts sent "
        "| bytes written per alert [<64 KiB] | busy cycle CPU / wall |",
        "|" + "---|" * 13,
    ]
    for r in rows:
        m = r["measure"]
        b, f = m["busy"], m["follow"]
        requests = b["requests"] + f["requests"]
        bound = 1 + f["cycles"] + b["jobs_read"] + f["jobs_read"] + r["affected_pages"]
        sent = b["sent"] + f["sent"]
        per_alert = m["bytes"] / sent if sent else math.inf
        out.append(
            f"| {r['searches']:,} | {b['requests']} | {b['jobs_read']} "
            f"| {b['asked']} ({sum(m['pages'].values())}) | {r['affected']} "
            f"({r['affected_pages']}) | {r['asked_not_affected']} "
            f"| {1 + f['cycles']} / {requests} / {b['jobs_read'] + f['jobs_read']} | {bound} "
            f"| {verdict(requests <= bound)} | {b['new'] + f['new']} | {sent} "
            f"| {per_alert / 1024:.1f} KiB | {b['cpu']:.2f} s / {b['wall']:.2f} s |"
        )
    return "\n".join(out)


def budget_table(rows: list[dict[str, Any]]) -> str:
    """Markdown table for B."""
    out = [
        "| budget | run | requests served | most in any 60 s window [≤ budget] | 429s [0] "
        "| cycles logged | jobs published | |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ok = r["max_60s"] <= r["rpm"] and r["429s"] == 0
        out.append(
            f"| {r['rpm']}/min | {r['seconds']:.0f} s | {r['requests']} | {r['max_60s']} "
            f"| {r['429s']} | {r['log_cycles']} | {r['published']} | {verdict(ok)} |"
        )
    return "\n".join(out)


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile (inf when that rank was never delivered)."""
    ranked = sorted(values)
    return ranked[max(0, math.ceil(p / 100 * len(ranked)) - 1)]


def seconds(value: float) -> str:
    return "not delivered" if math.isinf(value) else f"{value:.1f} s"


def latency_table(rows: list[dict[str, Any]]) -> str:
    """Markdown table for C."""
    out = [
        "| edge cache | published for searches | jobs | delivered | p50 | p95 [<65 s] | max |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        kinds = (("all", r["pubs"]), ("q", [p for p in r["pubs"] if p["q"]]))
        kinds += (("exact", [p for p in r["pubs"] if not p["q"]]),)
        for kind, pubs in kinds:
            if not pubs:
                continue
            lat = [p["latency"] for p in pubs]
            done = sum(1 for v in lat if not math.isinf(v))
            out.append(
                f"| {r['cache_ttl']:.0f} s | {kind} | {len(pubs)} | {done} | "
                f"{seconds(pct(lat, 50))} | {seconds(pct(lat, 95))} | {seconds(max(lat))} |"
            )
    return "\n".join(out)


def git_state() -> str:
    """The commit measured, and whether alertd/ had uncommitted changes when the run began."""
    here = Path(__file__).parent
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=here
    )
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "../alertd"],
        capture_output=True,
        text=True,
        cwd=here,
    )
    return head.stdout.strip() + (
        " + uncommitted changes in alertd/" if dirty.stdout.strip() else ""
    )


def machine(commit: str) -> str:
    """The machine the numbers come from."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "unknown",
    )
    free = subprocess.run(["free", "-h"], capture_output=True, text=True).stdout.splitlines()
    disk = subprocess.run(["df", "-hT", tempfile.gettempdir()], capture_output=True, text=True)
    import tinydb

    return "\n".join(
        [
            f"- alertd commit (when the run began): {commit}",
            f"- nproc: {os.cpu_count()}; CPU: {cpu}",
            f"- memory: {free[1].split()[1] if len(free) > 1 else '?'} total",
            f"- kernel: {platform.release()}",
            f"- Python {platform.python_version()}, tinydb {tinydb.__version__}, "
            f"httpx {httpx.__version__}",
            f"- disk (state dirs under {tempfile.gettempdir()}): {disk.stdout.splitlines()[-1]}",
        ]
    )


# -- main -----------------------------------------------------------------------------------


def run_scale(sizes: tuple[int, ...], root: Path, profile: bool) -> list[dict[str, Any]]:
    """A, one size after another (each in its own directory and processes)."""
    rows = []
    for size in sizes:
        rows.append(scale_size(size, root / f"scale-{size}", profile))
        say(f"A {size}: done: {json.dumps(rows[-1]['measure']['busy'])}")
    return rows


def run_live(quick: bool, root: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """B (120 and 60 per minute) and C (cache off, then on) at the same time, each with its
    own stand-in process, so the whole live part takes as long as its longest run."""
    b_time = 60.0 if quick else 180.0
    c_runs = (
        ((0.0, 90.0, 90.0), (300.0, 90.0, 90.0))
        if quick
        else (
            (0.0, 480.0, 120.0),
            (300.0, 360.0, 360.0),
        )
    )
    results: dict[str, Any] = {}
    jobs: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        (f"b{rpm}", lambda rpm=rpm: budget_run(rpm, b_time, root / f"budget-{rpm}"))
        for rpm in (120, 60)
    ]
    jobs += [
        (f"c{ttl:.0f}", lambda t=ttl, s=secs, g=grace: latency_run(t, s, g, root / f"lat-{t:.0f}"))
        for ttl, secs, grace in c_runs
    ]
    threads = [
        threading.Thread(target=lambda k=k, f=f: results.__setitem__(k, f())) for k, f in jobs
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [results[k] for k in ("b120", "b60") if k in results], [
        results[k] for k in results if k.startswith("c")
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, short live runs")
    parser.add_argument("--only", choices=("scale", "live"), help="run only one part")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--sizes", help="A's sizes, comma-separated (default 10,100,1000,10000)")
    parser.add_argument("--profile", action="store_true", help="cProfile A's busy cycles")
    parser.add_argument("--keep", type=Path, help="work in this directory and keep it")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(json.loads(args.serve))
        return
    if args.worker:
        spec = json.loads(args.worker)
        work = prime_worker if spec["kind"] == "prime" else measure_worker
        print(json.dumps(work(spec)))
        return
    sizes = (10, 100) if args.quick else (10, 100, 1000, 10000)
    if args.sizes:
        sizes = tuple(int(size) for size in args.sizes.split(","))
    raw: dict[str, Any] = {"commit": git_state()}
    with tempfile.TemporaryDirectory(prefix="alertd-bench-") as scratch:
        tmp = str(args.keep) if args.keep else scratch
        if args.only != "live":
            raw["scale"] = run_scale(sizes, Path(tmp), args.profile)
        if args.only != "scale":
            raw["budget"], raw["latency"] = run_live(args.quick, Path(tmp))
    if args.json:
        args.json.write_text(json.dumps(raw, indent=1, default=str), encoding="utf-8")
    print(report(raw))


def report(raw: dict[str, Any]) -> str:
    """Every table, and the profiles of any slow quiet cycle."""
    parts = ["## Machine\n\n" + machine(raw["commit"])]
    if "scale" in raw:
        parts.append(
            "## A. Scaling: quiet cycles, memory, validate\n\n" + scale_tables(raw["scale"])
        )
        parts.append("## A. Scaling: the busy cycle and its drain\n\n" + busy_tables(raw["scale"]))
        for row in raw["scale"]:
            for key, what in (
                ("quiet_profile", "a quiet cycle"),
                ("busy_profile", "the busy cycle"),
            ):
                if key in row["measure"]:
                    text = row["measure"][key]
                    parts.append(f"### Profile of {what} at {row['searches']:,}\n\n```\n{text}```")
    if "budget" in raw:
        parts.append("## B. Budget truth (`alertd run`)\n\n" + budget_table(raw["budget"]))
    if "latency" in raw:
        parts.append("## C. Publication → delivery latency\n\n" + latency_table(raw["latency"]))
    return "\n\n".join(parts) + "\n"


if __name__ == "__main__":
    main()
