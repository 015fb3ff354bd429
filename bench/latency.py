"""Latency out of the box: a job published on the stand-in → the webhook's POST, with the
default ``poll_interval`` and ``requests_per_minute``, at 1,000 searches.

Run it from the repository root with the project's venv:

    python bench/latency.py                    # 1,000 searches, 4 min of publishing (~7 min)
    python bench/latency.py --trickle 5        # the same with 5 queries whose answer trickles
    python bench/latency.py --minutes 1 --searches 100     # a quick look

It reuses ``bench/community.py``'s market, searches, stand-in (a child process), priming
worker and webhook sink: 1,000 searches over 200 distinct queries (a fifth with a ``q``
word), primed first by an unpaced worker, then ``alertd run`` with nothing but the
searches, ``api_url`` and ``state_dir`` in its config (every other setting its default).
A job that a randomly chosen search matches is published at random moments (``--gap``
seconds apart on average); latency = the first POST to that search's target carrying the
job's tag − the moment before the publish request.

``--trickle N`` adds N searches (``category: SlowK``) whose query the stand-in answers
a byte every 5 s, for the whole run: they never prime, so every cycle asks one of them
and it costs its whole 30 s ``request_timeout``.

A Markdown table goes to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import math
import random
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import community as c  # bench/community.py: run as a script, bench/ is on sys.path
import httpx
import yaml


def publish(url: str, specs: list[dict[str, Any]], seconds: float, gap: float) -> list[dict]:
    """Publish, ``gap`` seconds apart on average, a job one random search matches."""
    rng, sent = random.Random(c.SEED + 11), []
    deadline = time.monotonic() + seconds
    with httpx.Client(base_url=url, timeout=30) as http:
        while time.monotonic() < deadline:
            time.sleep(min(rng.expovariate(1 / gap), max(0.0, deadline - time.monotonic())))
            spec = rng.choice(specs)
            query = c.spec_query(spec)
            ref = f"ref{len(sent):05d}"
            at = time.time()
            http.post("/_control/jobs", json=c.job_fields(rng, tag=f" {ref}", **query))
            sent.append({"ref": ref, "at": at, "name": spec["name"], "q": "q" in query})
    return sent


def add_trickling(config: Path, url: str, count: int) -> None:
    """``count`` searches whose query trickles, added to the config after the priming."""
    doc = yaml.safe_load(config.read_text())
    doc["searches"] += [{"name": f"slow{k}", "category": f"Slow{k}"} for k in range(count)]
    config.write_text(yaml.safe_dump(doc, sort_keys=False))
    for k in range(count):
        fault = {"kind": "trickle", "path": f"/jobs?category=Slow{k}&", "delay": 5, "count": 10**6}
        httpx.post(f"{url}/_control/faults", json=fault, timeout=30).raise_for_status()


def run(searches: int, minutes: float, gap: float, trickle: int, work: Path) -> dict[str, Any]:
    """Prime, then ``alertd run`` with the defaults while jobs are published."""
    sink = c.Sink()
    specs = c.make_searches(searches, lambda n: f"json://127.0.0.1:{sink.port}/{n}", c.SEED + 1)
    with c.standin(cache_ttl=0, rate_limit=c.FAST) as url:
        config = c.write_config(work / "alerts.yaml", url, specs)
        c.say(f"priming {searches:,} searches")
        c.run_worker("prime", {"config": str(config)})
        add_trickling(config, url, trickle)
        c.say(f"alertd run, publishing for {minutes:g} min (trickling queries: {trickle})")
        with c.alertd_run(config, work / "alertd.log"):
            time.sleep(5)  # the daemon's start (imports, config) is not a poll's latency
            pubs = publish(url, specs, minutes * 60, gap)
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and any(
                c.delivered_at(sink, p) is None for p in pubs
            ):
                time.sleep(1)
    sink.shutdown()
    for pub in pubs:
        arrived = c.delivered_at(sink, pub)
        pub["latency"] = math.inf if arrived is None else arrived - pub["at"]
    log = (work / "alertd.log").read_text(errors="replace")
    config_doc = yaml.safe_load(config.read_text())
    return {
        "searches": searches,
        "trickle": trickle,
        "pubs": pubs,
        "cycles": len(re.findall(r" cycle \d+ in ", log)),
        "settings": sorted(k for k in config_doc if k != "searches"),
    }


def table(rows: list[dict[str, Any]]) -> str:
    """p50/p95/max per run, for all publications and by kind of search."""
    out = [
        "| searches | trickling queries | published for | jobs | delivered | p50 | p95 | max "
        "| cycles logged |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        kinds = [("all", r["pubs"]), ("exact filters", [p for p in r["pubs"] if not p["q"]])]
        kinds.append(("q (asked of the API)", [p for p in r["pubs"] if p["q"]]))
        for kind, pubs in kinds:
            if not pubs:
                continue
            lat = [p["latency"] for p in pubs]
            done = sum(1 for v in lat if not math.isinf(v))
            out.append(
                f"| {r['searches']:,} | {r['trickle']} | {kind} | {len(pubs)} | {done} "
                f"| {c.seconds(c.pct(lat, 50))} | {c.seconds(c.pct(lat, 95))} "
                f"| {c.seconds(max(lat))} | {r['cycles']} |"
            )
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--searches", type=int, default=1000)
    parser.add_argument("--minutes", type=float, default=4.0, help="of publishing")
    parser.add_argument("--gap", type=float, default=5.0, help="mean seconds between jobs")
    parser.add_argument("--trickle", type=int, default=0, help="queries that trickle")
    parser.add_argument("--log", type=Path, help="keep alertd's log here")
    args = parser.parse_args()
    commit = c.git_state()
    with tempfile.TemporaryDirectory(prefix="alertd-latency-") as tmp:
        row = run(args.searches, args.minutes, args.gap, args.trickle, Path(tmp))
        if args.log:
            shutil.copy(Path(tmp) / "alertd.log", args.log)
    print(c.machine(commit))
    print(f"\nconfig keys besides searches: {', '.join(row['settings'])} (the rest default)\n")
    print(table([row]))


if __name__ == "__main__":
    main()
