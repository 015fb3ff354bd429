"""Resident memory of ``alertd run`` over many SIGHUP reloads (``settle_heap`` freezes
the heap after each: does anything pile up?).

Run it from the repository root with the project's venv:

    python bench/reloads.py --reloads 50 --searches 1000

A stand-in API (an empty market: the cycles ask, find nothing, send nothing) and a
config of ``--searches`` operator searches over a fifth as many queries, each with its
own target URL (``bench/community.py``'s); ``alertd run`` in its own process, polling
hourly. After its first cycle it is sent SIGHUP ``--reloads`` times, each waited for
("config reloaded" in its log); its ``VmRSS`` is read after the first and every tenth.
Markdown to stdout. Nothing in ``alertd/`` is changed.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from community import make_searches, write_config

from alertd.market import Market
from alertd.standin import StandInServer


def vm_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reloads", type=int, default=50)
    parser.add_argument("--searches", type=int, default=1000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="alertd-reloads-"))
    server = StandInServer(Market(seed=1)).start()
    specs = make_searches(args.searches, lambda name: f"json://127.0.0.1:9/{name}", 1)
    config = write_config(
        work / "alerts.yaml", server.url, specs, poll_interval="1h", requests_per_minute=120
    )
    log_path = work / "log.txt"
    with log_path.open("w") as log:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "alertd", "run", "-c", str(config)], stdout=log, stderr=log
        )

    def wait_for(text: str, count: int) -> None:
        deadline = time.monotonic() + 600
        while log_path.read_text().count(text) < count:
            if daemon.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(log_path.read_text()[-2000:])
            time.sleep(0.05)

    rows = []
    try:
        wait_for("cycle 1 ", 1)
        rows.append(("after the first cycle", vm_rss_mib(daemon.pid)))
        for n in range(1, args.reloads + 1):
            daemon.send_signal(signal.SIGHUP)
            wait_for("config reloaded", n)
            if n == 1 or n % 10 == 0 or n == args.reloads:
                time.sleep(0.3)
                rows.append((f"after reload {n}", vm_rss_mib(daemon.pid)))
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
        server.stop()
    print(f"| `alertd run`, {args.searches:,} searches | VmRSS |")
    print("|---|---:|")
    for label, rss in rows:
        print(f"| {label} | {rss:.1f} MiB |")


if __name__ == "__main__":
    main()
