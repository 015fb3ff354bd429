"""``alertd standin``: the stand-in OpenTrain API as a server of its own.

For trying a config, or a container, with no network and no account: point
``api_url`` at it. It serves a simulated marketplace (``market.Market``) with the
production API's behaviour (see ``standin.py``) and can publish a job every few
seconds, as ``alertd demo`` does.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType

import click


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    default=8080,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port to listen on (0: any free one; the URL is printed).",
)
@click.option(
    "--every",
    default=0.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Seconds between new simulated jobs; 0 publishes none.",
)
@click.option("--jobs", default=12, show_default=True, help="Open jobs to start with.")
@click.option("--seed", default=None, type=int, help="Seed for the simulated jobs.")
def standin(host: str, port: int, every: float, jobs: int, seed: int | None) -> None:
    """Serve a simulated OpenTrain API until stopped, to try a config offline.

    Its edge cache is off, so a new job shows at the next poll. Stops on SIGTERM or Ctrl-C.

    \b
    Example:
      alertd standin --port 8080 --every 5
      # then, in alerts.yaml:  api_url: http://127.0.0.1:8080
    """
    # Imported here: the command is registered by every `alertd` start, the market only
    # used by this one.
    from alertd.demo import publish_every
    from alertd.market import Market
    from alertd.standin import StandInServer

    market = Market(seed=seed)
    market.add_past_jobs(jobs)
    server = StandInServer(market, host=host, port=port, cache_ttl=0).start()
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if every > 0:
        threading.Thread(target=publish_every, args=(market, every, stop), daemon=True).start()
    click.echo(f"stand-in OpenTrain API on {server.url} ({jobs} open jobs)", err=True)
    sys.stderr.flush()
    while not stop.wait(0.5):
        pass
    server.stop()
