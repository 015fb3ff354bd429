"""``alertd demo``: a simulated marketplace on 127.0.0.1, and the daemon running against it.

No account and no network: the stand-in API publishes a job every few seconds, two
sample searches print their alerts on standard output, and it all stops by itself.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Callable

from alertd.config import parse_config
from alertd.daemon import Daemon
from alertd.deliver import send
from alertd.market import CATEGORIES, LANGUAGES, Market
from alertd.pipeline import make_client, run_once
from alertd.settings import USE_ENVIRONMENT
from alertd.standin import StandInServer
from alertd.store import Store

DEMO_CONFIG = """
api_url: {url}
state_dir: {state}
poll_interval: 2s
searches:
  - name: audio-jobs
    category: Audio Annotation
  - name: spanish-anything
    language: Spanish
"""
SEEDED_JOBS = 12


def publish_every(market: Market, every: float, stop: threading.Event) -> None:
    """Publish a job every ``every`` seconds, alternating between the two sample searches."""
    turn = 0
    while not stop.wait(every):
        turn += 1
        fields = {"category": CATEGORIES[0]} if turn % 2 else {"languages": [LANGUAGES[1]]}
        market.add_job(**fields)


def run_demo(
    duration: float, every: float, seed: int | None, announce: Callable[[str], None]
) -> None:
    """Run the demo for ``duration`` seconds (0: until a signal)."""
    market = Market(seed=seed)
    server = StandInServer(market, cache_ttl=0).start()  # a demo can't wait out a 5-min cache
    market.link_base = server.url  # the jobs' links lead to the stand-in, not to nowhere
    market.add_past_jobs(SEEDED_JOBS)
    stop = threading.Event()
    try:
        with tempfile.TemporaryDirectory(prefix="alertd-demo-") as state:
            token = USE_ENVIRONMENT.set(False)  # a sandbox: no ALERTD_* reaches it
            try:
                config = parse_config(DEMO_CONFIG.format(url=server.url, state=state), "demo")
            finally:
                USE_ENVIRONMENT.reset(token)
            announce(f"Simulated marketplace on {server.url}; a new job every {every:g}s.")
            threading.Thread(target=publish_every, args=(market, every, stop), daemon=True).start()
            if duration > 0:
                timer = threading.Timer(duration, stop.set)
                timer.daemon = True
                timer.start()
            with Store.open(config.state_dir) as store, make_client(config, stop) as client:
                daemon = Daemon(
                    config,
                    lambda current, fresh: run_once(
                        current, client, store, send, stop=stop, retry_refused=fresh
                    ),
                    stop=stop,
                )
                daemon.install_signal_handlers()
                daemon.run()
    finally:
        stop.set()
        server.stop()
