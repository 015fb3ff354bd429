"""One clocked world for the tests that run alertd's cycle in-process.

A ``Clock`` the test moves, the simulated ``Market`` on that clock, the stand-in API
serving it on 127.0.0.1 (edge cache off unless asked, a rate limit only alertd's own
budget meets), a ``Recorder`` in place of the channels, config files written for the
stand-in, and ``run``: one ``run_once`` with a fresh store and client, as ``alertd once``
(or a restart) would run it. ``World`` holds them together for a test.

Test modules import their shared helpers from here, never from each other.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from threading import Event
from types import TracebackType
from typing import Any

from alertd.api import OpenTrainClient
from alertd.config import Config, load_config
from alertd.deliver import Outcome
from alertd.market import Market
from alertd.models import Target
from alertd.pipeline import CycleReport, in_cycle_delays, run_once
from alertd.render import Message, render_plain
from alertd.standin import StandInServer
from alertd.store import Store
from alertd.subscriptions import Subscriptions

FAST = 100_000  # a stand-in rate limit high enough that only alertd's own budget counts

Moment = Callable[[], datetime]


class Clock:
    """A clock the test moves: ``now`` stays where it was put."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


class Recorder:
    """Stands in for every channel: records what each message carries, sends nothing.

    - ``sent``: (target label, first word of each job's title), one per job a message
      carries (a burst over the cap is one message listing them);
    - ``headlines``: (target label, the message's plain-text title), one per message;
    - ``messages``: (target label, monotonic time, job titles), one per message.

    While ``up`` is False every send fails, as a target that is down.
    """

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []
        self.headlines: list[tuple[str, str]] = []
        self.messages: list[tuple[str, float, list[str]]] = []
        self.up = True

    def __call__(self, target: Target, message: Message) -> Outcome:
        if not self.up:
            return Outcome(False, error="down")
        titles = [item.job.title for item in message.items]
        self.sent += [(target.label, title.split()[0]) for title in titles]
        self.headlines.append((target.label, render_plain(message, UTC)[0]))
        self.messages.append((target.label, time.monotonic(), titles))
        return Outcome(True)

    def to(self, label: str) -> list[list[str]]:
        """The job titles of each message ``label`` was sent, in order."""
        return [titles for name, _, titles in self.messages if name == label]

    def titles(self) -> list[str]:
        """Each message's plain-text title, in order."""
        return [title for _, title in self.headlines]


def run(
    config: Config,
    url: str,
    send: Callable[[Target, Message], Outcome],
    clock: Moment | None = None,
    stop: Event | None = None,
    subscriptions: Subscriptions | None = None,
) -> CycleReport:
    """One cycle as a new process runs it: the store opened anew, a fresh client;
    ``subscriptions`` instead of the config's own searches when given."""
    extra: dict[str, Any] = {"subscriptions": subscriptions}
    if clock is not None:
        extra["clock"] = clock
    if stop is not None:
        extra["stop"] = stop
    with (
        Store.open(config.state_dir) as store,
        OpenTrainClient(
            url,
            requests_per_minute=FAST,
            api_limit=FAST,
            retry_delays=retry_delays(config),
        ) as client,
    ):
        return run_once(config, client, store, send, **extra)


def retry_delays(config: Config) -> tuple[float, ...]:
    """The in-cycle back-off ``make_client`` gives ``config``, for a client built here
    with the test budget instead."""
    return in_cycle_delays(config.poll_interval)


def config_file(directory: Path, url: str, body: str, state: Path | None = None) -> Path:
    """``directory/alerts.yaml``: the stand-in's URL, a state directory (``directory/state``
    unless given), 120 requests a minute, then ``body`` (whose top-level keys win)."""
    path = directory / "alerts.yaml"
    defaults = {
        "api_url": url,
        "state_dir": str(state or directory / "state"),
        "requests_per_minute": "120",
    }
    given = set(re.findall(r"^(\w+):", body, flags=re.MULTILINE))
    head = "".join(f"{k}: {v}\n" for k, v in defaults.items() if k not in given)
    path.write_text(head + body, encoding="utf-8")
    return path


def community_config(
    directory: Path,
    url: str,
    searches: dict[str, dict[str, str]],
    poll: str = "5m",
    extra: str = "",
    state: Path | None = None,
) -> Config:
    """A config whose every search notifies a channel of its own, named like the search."""
    lines = [f"poll_interval: {poll}", "channels:"]
    lines += [f"  {name}: json://127.0.0.1:9/{name}" for name in searches]
    lines.append("searches:")
    for name, query in searches.items():
        lines.append(f"  - name: {name}\n    notify: [{name}]")
        lines += [f"    {key}: '{value}'" for key, value in query.items()]
    body = extra + "\n".join(lines) + "\n"
    return load_config(config_file(directory, url, body, state))


class World:
    """A market on a clock the test moves, behind a fast stand-in, and a ``Recorder``.

    ``frozen=False`` leaves the market on real time and runs cycles at real time too
    (for tests of the edge cache, which ages in real seconds). Use it as a context
    manager, or call ``stop``.
    """

    def __init__(
        self,
        directory: Path,
        *,
        seed: int = 1,
        cache_ttl: float = 0.0,
        start: datetime | None = None,
        frozen: bool = True,
    ) -> None:
        self.directory = directory
        self.clock = Clock(start)
        self.frozen = frozen
        self.market = Market(clock=self.clock if frozen else None, seed=seed)
        self.server = StandInServer(self.market, cache_ttl=cache_ttl, rate_limit=FAST).start()
        self.send = Recorder()
        self.config: Config | None = None

    @property
    def url(self) -> str:
        """The stand-in's base URL."""
        return self.server.url

    def searches(self, searches: dict[str, dict[str, str]], **options: Any) -> Config:
        """Use (and return) a ``community_config`` of ``searches`` from now on."""
        self.config = community_config(self.directory, self.url, searches, **options)
        return self.config

    def body(self, body: str) -> Config:
        """Use (and return) a config of ``body`` (YAML) from now on."""
        self.config = load_config(config_file(self.directory, self.url, body))
        return self.config

    def advance(self, after: timedelta) -> None:
        """Move the clock on by ``after``, without a cycle."""
        assert self.frozen, "a world on real time has no clock to move"
        self.clock.now += after

    def cycle(
        self,
        after: timedelta = timedelta(0),
        config: Config | None = None,
        subscriptions: Subscriptions | None = None,
    ) -> CycleReport:
        """One cycle (a restart: the store is opened anew), ``after`` from the last;
        ``subscriptions`` served instead of the config's own searches when given."""
        if after:
            self.advance(after)
        chosen = config or self.config
        assert chosen is not None, "give the world a config first"
        clock = self.clock if self.frozen else None
        return run(chosen, self.url, self.send, clock, subscriptions=subscriptions)

    def cycle_at(self, moment: datetime, config: Config | None = None) -> CycleReport:
        """One cycle with the clock set to ``moment``."""
        assert self.frozen, "a world on real time has no clock to set"
        self.clock.now = moment
        return self.cycle(config=config)

    def stop(self) -> None:
        """Stop the stand-in."""
        self.server.stop()

    def __enter__(self) -> World:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()


# -- what the tests read back ---------------------------------------------------------


def alerts_in(output: str) -> list[str]:
    """Titles of the alerts ``alertd once`` printed to stdout."""
    return [
        line.removeprefix("=== New OpenTrain job: ")
        for line in output.splitlines()
        if line.startswith("=== New OpenTrain job: ")
    ]


def strings_in(value: Any) -> list[str]:
    """Every string anywhere inside a decoded JSON value."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings_in(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings_in(v)]
    return []
