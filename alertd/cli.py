"""The ``alertd`` command. Domain errors become click errors here and only here.

Exit status: 0 all went well; 1 something failed at run time and will be retried
(a search, a delivery, the state file); 2 the config or the command line is wrong.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager, nullcontext, suppress
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import click

from alertd import __version__
from alertd.config import Config, collector_paused, load_config, settle_heap, suggest
from alertd.errors import AlertdError, ApiError, ConfigError, StoreError
from alertd.health import (
    DEFAULT_MAX_OWED_AGE,
    DEFAULT_MAX_UNREACHABLE,
    HealthLimits,
    judge_health,
    process_running,
    read_heartbeat,
)
from alertd.listen import DEFAULT_HOST
from alertd.match import is_open, why_dropped
from alertd.models import Job, Pay, Target
from alertd.owners import refuse_shared_names
from alertd.plan import describe_capacity, group_queries, release_at
from alertd.render import Item, Message, defang, describe_pay, safe_link, show_time
from alertd.scaffold import init
from alertd.serve import standin
from alertd.settings import DEFAULT_API_URL, default_state_dir
from alertd.start import exit_for_tz
from alertd.store import Store
from alertd.targets import RedactingFilter
from alertd.words import plural
from alertd.zones import keep_machine_zone, tz_problem

# The daemon, the API client, the senders and the metrics server are imported inside
# the commands that use them: `validate` (and `status`, `health`) never do, and loading
# them (httpx, its async backends, prometheus_client) was a third of validate's time.
if TYPE_CHECKING:
    from alertd.api import OpenTrainClient
    from alertd.budget import Window
    from alertd.community.serve import CommunityServer
    from alertd.daemon import CycleRunner
    from alertd.deliver import Sender
    from alertd.metrics import MetricsServer
    from alertd.telegram.poll import Poller

log = logging.getLogger("alertd")

LOG_FORMAT = "%(asctime)s %(levelname)s %(message)s"
CONFIG_HELP = "The YAML config file (env: ALERTD_CONFIG)."


class ConfigClickError(click.ClickException):
    """A config mistake: exit status 2, one line naming file, line and field."""

    exit_code = 2


def fail(exc: AlertdError) -> NoReturn:
    """Turn one of our errors into the click error with the right exit status."""
    if isinstance(exc, ConfigError):
        raise ConfigClickError(exc.describe()) from None
    raise click.ClickException(str(exc)) from None


class LogFormatter(logging.Formatter):
    """A log line with its time in the config's zone (the zone "next poll" is shown in),
    as text or as one JSON object (``log_format: json``) with the cycle's numbers as
    fields, for a log collector."""

    def __init__(self, tz: tzinfo | None, as_json: bool) -> None:
        super().__init__(LOG_FORMAT)
        self.tz = tz
        self.as_json = as_json

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        moment = datetime.fromtimestamp(record.created, self.tz or UTC).astimezone(self.tz)
        return moment.strftime("%Y-%m-%dT%H:%M:%S%z")

    def format(self, record: logging.LogRecord) -> str:
        if not self.as_json:
            return super().format(record)
        doc: dict[str, object] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        doc.update(getattr(record, "fields", None) or {})
        if record.exc_text:  # the masked text the filter left
            doc["exception"] = record.exc_text
        elif record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False, default=str)


def setup_logging(
    level: str,
    secrets: frozenset[str] = frozenset(),
    tz: tzinfo | None = None,
    log_format: str = "text",
) -> RedactingFilter:
    """One line per event on stderr, secrets masked, library chatter kept below DEBUG."""
    redactor = RedactingFilter(secrets)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LogFormatter(tz, log_format == "json"))
    handler.addFilter(redactor)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    set_log_level(level)
    return redactor


def set_log_level(level: str) -> None:
    """Log at ``level``; httpx, httpcore and apprise only at DEBUG or above WARNING."""
    logging.getLogger().setLevel(level)
    quiet = logging.DEBUG if level == "DEBUG" else logging.WARNING
    for name in ("httpx", "httpcore", "apprise"):
        logging.getLogger(name).setLevel(quiet)


def check_config(path: str, need_searches: bool = False, need_secrets: bool = True) -> Config:
    """Load the config; ConfigError if it is wrong (or has no search when one is needed)."""
    config = load_config(Path(path), need_secrets=need_secrets)
    if need_searches and not config.searches and config.community is None:  # members' own
        raise ConfigError(
            "no saved search yet; add one (see alerts.example.yaml)",
            source=config.source,
            field="searches",
        )
    return config


def read_config(path: str, need_searches: bool = False, need_secrets: bool = True) -> Config:
    """Load the config and set up logging for it, or exit 2 with one clear line.

    Without ``need_secrets`` a ``${VAR}`` that is not set is no error (status, health).
    """
    try:
        config = check_config(path, need_searches, need_secrets)
    except ConfigError as exc:
        fail(exc)
    setup_logging(config.log_level, config.secrets, config.tz, config.log_format)
    return config


def refuse_shared_names_or_exit(config: Config, store: Store) -> None:
    """Exit 2 when another config file sharing the state directory has one of the
    config's search names (``owners.py``)."""
    try:
        refuse_shared_names(config, store)
    except ConfigError as exc:
        fail(exc)


@contextmanager
def open_store(config: Config, dry_run: bool = False) -> Iterator[Store]:
    """The state store, locked; for a dry run, an unlocked copy that is thrown away."""
    try:
        if dry_run:
            store = Store.snapshot(config.state_dir)
        else:
            move = config.broken_state == "move_aside"
            store = Store.open(config.state_dir, move_broken=move)
    except StoreError as exc:
        fail(exc)
    with store:
        yield store


def config_places() -> list[Path]:
    """Where alertd looks for its config when neither -c nor ALERTD_CONFIG names one."""
    xdg = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return [
        Path("alerts.yaml"),
        Path(xdg) / "alertd" / "alerts.yaml",
        Path("/etc/alertd/alerts.yaml"),
    ]


def find_config(ctx: click.Context, param: click.Parameter, value: str | None) -> str:
    """-c after the command, else -c before it (or ALERTD_CONFIG), else the first file
    that exists in ``config_places()``, else ./alerts.yaml (whose absence is then said)."""
    if value is None:
        value = ctx.find_root().params.get("config_path")
    if value is not None:
        return value
    for place in config_places():
        if place.is_file():
            if place != Path("alerts.yaml"):
                click.echo(f"(using the config in {place})", err=True)
            return str(place)
    return "alerts.yaml"


config_option = click.option(
    "--config",
    "-c",
    "config_path",
    default=None,
    callback=find_config,
    help=CONFIG_HELP + " [default: ./alerts.yaml, then $XDG_CONFIG_HOME/alertd/alerts.yaml, then"
    " /etc/alertd/alerts.yaml: the first that exists]",
)


def _log_format(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None:  # as ALERTD_LOG_FORMAT would: the command line wins over the file
        os.environ["ALERTD_LOG_FORMAT"] = value
    return value


log_format_option = click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default=None,
    callback=_log_format,
    expose_value=False,
    is_eager=True,
    help="Log lines as text, or one JSON object each (for a log collector)"
    " [default: log_format in the config, else text].",
)
dry_run_option = click.option(
    "--dry-run",
    is_flag=True,
    help="Poll and show what would be sent, to whom; send nothing, record nothing.",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="alertd")
@click.option(
    "--config",
    "-c",
    "config_path",
    default=None,
    envvar="ALERTD_CONFIG",
    help=CONFIG_HELP + " Accepted before or after the command.",
)
def cli(config_path: str | None) -> None:
    """alertd: tells you about new OpenTrain jobs that fit you, once, where you read.

    \b
    Try it with nothing set up:   alertd demo
    Start a config:               alertd init alerts.yaml
    Check your config:            alertd validate -c alerts.yaml --online
    Run it for real:              alertd run -c alerts.yaml

    Exit status: 0 ok, 1 a run-time failure (retried later), 2 a config or usage error.
    """


def metrics_options(command: Callable[..., None]) -> Callable[..., None]:
    """``--metrics-port`` and ``--metrics-host``, for ``run``."""
    port = click.option(
        "--metrics-port",
        type=click.IntRange(1, 65535),
        default=None,
        help="Serve Prometheus /metrics and /healthz on this port "
        "[env: ALERTD_METRICS_PORT; default: off].",
    )
    host = click.option(
        "--metrics-host",
        default=DEFAULT_HOST,
        show_default=True,
        help="Address the metrics port listens on; 0.0.0.0 only in a container "
        "(anywhere else it shows your targets' names and failures to the network).",
    )
    return port(host(command))


def open_metrics_port(config: Config, port: int | None, host: str) -> MetricsServer | None:
    """The metrics port, listening (the option wins over ``metrics_port``), or exit 2."""
    from alertd.metrics import bind_metrics

    option = "--metrics-port" if port is not None else "metrics_port"
    port = config.metrics_port if port is None else port
    try:
        return None if port is None else bind_metrics(port, host, option)
    except ConfigError as exc:
        fail(exc)


def make_sender(config: Config, dry_run: bool, stop: threading.Event) -> Sender:
    """How ``run`` and ``once`` deliver: for real (feeds written in the state directory,
    each service within ``send_timeout``), or shown on standard output (``--dry-run``)."""
    from alertd.deliver import dry_run_sender, sender_for, with_feeds
    from alertd.feeds import Feeds

    if dry_run:
        return dry_run_sender(sys.stdout, config.tz)
    feeds = Feeds.open(config.state_dir)
    return with_feeds(sender_for(config.send_timeout, config.tz, stop), feeds)


@cli.command()
@config_option
@dry_run_option
@log_format_option
@metrics_options
def run(config_path: str, dry_run: bool, metrics_port: int | None, metrics_host: str) -> None:
    """Run the daemon: poll at start, then every poll_interval, until stopped.

    SIGTERM or Ctrl-C stops it after the current step; a second one stops it at once.
    SIGHUP reads the config again (and the files it includes) and uses it from the next
    cycle on; a config with a mistake is refused and the running one kept.

    \b
    Example:
      alertd run -c /data/alerts.yaml
    """
    from alertd.budget import open_window
    from alertd.daemon import Daemon, use_utc
    from alertd.metrics import serve_metrics
    from alertd.pipeline import CycleReport, make_client, run_once

    try:
        config = check_config(config_path, need_searches=True)
    except ConfigError as exc:
        fail(exc)
    redactor = setup_logging(config.log_level, config.secrets, config.tz, config.log_format)

    def reload() -> Config:
        new = check_config(config_path, need_searches=True)
        refuse_shared_names(new, store)  # the store is open by the time a SIGHUP comes
        redactor.add(new.secrets)  # before anything of the new config can reach a log line
        set_log_level(new.log_level)
        for handler in logging.getLogger().handlers:  # times in the new zone, the new format
            if isinstance(handler.formatter, LogFormatter):
                handler.formatter.tz = new.tz
                handler.formatter.as_json = new.log_format == "json"
        settle_heap()
        return new

    listener = open_metrics_port(config, metrics_port, metrics_host)
    keep_machine_zone()  # a reload still shows times in the machine's zone
    use_utc()
    text, too_slow = capacity(config)
    log.log(logging.WARNING if too_slow else logging.INFO, "%s", text)
    # One window for the start's facets and the cycles, whether shared or not: the
    # request the start makes counts against the first cycle's minute.
    window = open_window(config.state_dir, config.request_timeout, create=True)
    warn_unknown_filters(config, window)
    stop = threading.Event()
    sender = make_sender(config, dry_run, stop)
    page = start_community(config, dry_run)
    bot = start_bot(config, page)
    if bot is not None:
        sender = bot.wrap(sender, config.tz, stop)
    with (
        open_store(config, dry_run) as store,
        make_client(config, stop, window) as client,
        serve_metrics(listener, config, client) as metrics,
        closing(page) if page is not None else nullcontext(),
        closing(bot) if bot is not None else nullcontext(),
    ):
        refuse_shared_names_or_exit(config, store)
        send = sender if metrics is None else metrics.watch_sends(sender)

        def cycle(current: Config, fresh: bool) -> CycleReport:
            try:
                subscriptions = None if page is None else page.subscriptions(current)
            except (StoreError, OSError) as exc:
                # The members table unreadable (a planted link, a disk error): like any
                # cycle's state error, said and tried again at the next poll, never
                # the end of the daemon. The whole cycle waits: without the members'
                # searches their owed mail would go out as the operator's.
                log.error("members' searches: %s; the next cycle tries again", exc)
                return CycleReport(error=f"members' searches: {exc}")
            return run_once(
                current,
                client,
                store,
                send,
                stop=stop,
                retry_refused=fresh,
                subscriptions=subscriptions,
            )

        runner: CycleRunner = cycle
        daemon = Daemon(
            config,
            runner if metrics is None else metrics.watch_cycles(runner, store),
            reload=reload,
            stop=stop,
            heartbeat=not dry_run,
        )
        daemon.install_signal_handlers()
        settle_heap()
        daemon.run()


def start_community(config: Config, dry_run: bool) -> CommunityServer | None:
    """The community page when the config has one (a CommunityServer: ``close()``); the
    web stack is imported only then, so the other commands start as fast as before."""
    if config.community is None or dry_run:
        return None
    from alertd.community.serve import serve_configured

    try:
        return serve_configured(config, dry_run)
    except (ConfigError, StoreError) as exc:  # the port; a damaged members.json
        fail(exc)


def start_bot(config: Config, page: CommunityServer | None) -> Poller | None:
    """The community's Telegram bot beside its page, when ``community.telegram`` is set
    (a Poller: ``close()``; ``wrap`` routes members' chats through it)."""
    if page is None or config.community is None or config.community.telegram is None:
        return None
    from alertd.telegram.poll import serve_bot

    poller = serve_bot(
        config.community, page.page.members, page.page.lookup, tz_name=page.page.tz_name
    )
    if poller is not None:
        page.page.telegram = lambda: poller.bot.username
    return poller


@cli.command()
@config_option
@dry_run_option
@log_format_option
def once(config_path: str, dry_run: bool) -> None:
    """Run one full cycle, then exit (for cron and for trying a config).

    Exit status 1 when a search or a delivery failed; what is owed stays owed.

    \b
    Example:
      alertd once -c alerts.yaml --dry-run
    """
    from alertd.pipeline import make_client, run_once

    config = read_config(config_path, need_searches=True)
    stop = threading.Event()
    sender = make_sender(config, dry_run, stop)
    with open_store(config, dry_run) as store, make_client(config, stop) as client:
        refuse_shared_names_or_exit(config, store)
        settle_heap()
        report = run_once(config, client, store, sender, stop=stop)
    prefix = "dry run: " if dry_run else ""
    log.log(
        logging.INFO if report.ok else logging.WARNING,
        "%scycle: %s",
        prefix,
        report.summary(),
        extra={"fields": {"dry_run": dry_run, **report.fields()}},
    )
    if not report.ok:
        sys.exit(1)


@cli.command()
@config_option
@click.option("--online", is_flag=True, help="Also check filter values against the live facets.")
def validate(config_path: str, online: bool) -> None:
    """Check the config without sending anything.

    \b
    Example:
      alertd validate -c alerts.yaml --online
    """
    config = read_config(config_path, need_searches=True)
    # The config is kept until the command ends: the cycle collector's next full pass
    # over its objects (none of them garbage) cost 0.2 s at 10,000 searches, for nothing.
    with collector_paused():
        check_state_dir(config)
        if online:
            check_online(config)
        targets = sorted({t.label for s in config.searches for t in s.targets})
        shown = ", ".join(targets[:10]) + (
            f", … and {len(targets) - 10:,} more" if targets[10:] else ""
        )
        click.echo(
            f"{config.source} is valid: {len(config.searches):,} searches, "
            f"{len(targets):,} targets ({shown or 'none'})"
        )
        if pings := role_pings(config):
            click.echo(pings)
        click.echo(capacity(config)[0])


def role_pings(config: Config) -> str:
    """Which Discord channels ping which roles, on one line; '' when none does."""
    pinging = sorted(
        {(t.label, t.mention_roles) for t in config.targets.values() if t.mention_roles}
    )
    named = [f"{label} → {', '.join(roles)}" for label, roles in pinging[:10]]
    more = f"; … and {len(pinging) - 10:,} more" if pinging[10:] else ""
    return f"Discord role pings: {'; '.join(named)}{more}" if named else ""


def capacity(config: Config) -> tuple[str, bool]:
    """How long asking every distinct query once takes within the budget, and if too long."""
    queries = len(group_queries(config.searches))
    return describe_capacity(queries, config.requests_per_minute, config.refresh_interval)


def check_state_dir(config: Config) -> None:
    """What `alertd run` will need of state_dir: a directory this user can write, or a
    place to make one. Exit 2 naming the line when it cannot be."""
    path = config.state_dir
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    problem = None
    if existing is not None and not existing.is_dir():
        problem = f"{existing} is a file, not a directory"
    elif existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        problem = f"{existing} is not writable by this user"
    if problem:
        raise ConfigClickError(
            ConfigError(
                f"{problem}; alertd keeps its state in {path}: point state_dir elsewhere",
                source=config.source,
                line=config.line_of("state_dir"),
                field="state_dir",
            ).describe()
        )


FACET_FIELDS = (("category", "categories"), ("language", "languages"), ("country", "countries"))


def quick_client(
    api_url: str, config: Config | None = None, window: Window | None = None
) -> OpenTrainClient:
    """A client for one question a person waits on (facets): one try, a short deadline,
    so an offline machine says so in seconds, not after the daemon's patient retries.
    It counts in ``window``, by default the state directory's (``config``'s, else the
    default one if it exists), with the daemon and everything else using it."""
    from alertd.api import OpenTrainClient
    from alertd.budget import open_window

    if config is None:
        window = window or open_window(default_state_dir(), QUICK_DEADLINE)
        return OpenTrainClient(api_url, deadline=QUICK_DEADLINE, retry_delays=(), window=window)
    deadline = min(config.request_timeout, QUICK_DEADLINE)
    return OpenTrainClient(
        api_url,
        requests_per_minute=config.requests_per_minute,
        deadline=deadline,
        retry_delays=(),
        window=window or open_window(config.state_dir, deadline),
    )


QUICK_DEADLINE = 5.0  # seconds


def facet_problems(
    config: Config, facets: dict[str, list[tuple[str, int]]]
) -> list[tuple[int, str, str]]:
    """(search index, field, what is wrong) for each filter value the API does not know
    now, with the nearest it does (a value that differs only in case included)."""
    problems = []
    for index, search in enumerate(config.searches):
        for attr, facet in FACET_FIELDS:
            value = getattr(search, attr)
            valid = [v for v, _ in facets.get(facet, [])]
            if value and valid and value not in valid:
                same = [v for v in valid if v.casefold() == value.casefold()]
                hint = f" — did you mean {same[0]!r}?" if same else suggest(value, valid)
                problems.append((index, attr, f"{value!r} is not a {attr} on OpenTrain now{hint}"))
    return problems


def check_online(config: Config) -> None:
    """Check filter values against the live facets; exit 2 naming the first unknown one."""
    try:
        with quick_client(config.api_url, config) as client:
            facets = client.facet_counts()
    except ApiError as exc:
        raise click.ClickException(
            f"the offline checks passed, but the facets could not be fetched from "
            f"{config.api_url}: {exc}; try again online, or leave out --online"
        ) from None
    problems = facet_problems(config, facets)
    if problems:
        index, attr, message = problems[0]
        raise ConfigClickError(config.search_error(index, message, attr).describe())


def warn_unknown_filters(config: Config, window: Window) -> None:
    """At start: a filter value the API does not know matches nothing, for ever; say so
    (one request, counted in ``window``; if the API cannot answer now, the daemon just
    starts)."""
    try:
        with quick_client(config.api_url, config, window) as client:
            facets = client.facet_counts()
    except ApiError as exc:
        log.debug("facets not checked at start: %s", exc)
        return
    for index, _field, message in facet_problems(config, facets):
        name = config.searches[index].name
        log.warning("search %r: %s; it will match nothing until that is fixed", name, message)


SAMPLE_JOB = Job(
    id="alertd-sample",
    title="Sample alert: Spanish podcast transcription",
    company="alertd",
    status="OPEN",
    url="https://app.opentrain.ai/",
    summary="This is a test message from alertd test-notify. No job behind it.",
    category="Transcription",
    languages=("Spanish",),
    date_posted=datetime.now(UTC),
    pay=Pay(payment_type="PAY_PER_HOUR", currency="USD", hourly_min=18, hourly_max=24),
)


def pick_targets(config: Config, name: str | None) -> list[Target]:
    """Every target in the config, or those of one channel, search or URL."""
    everything = {t.key: t for s in config.searches for t in s.targets}
    everything.update(config.targets)
    if name is None:
        return list(everything.values())
    if name in config.channels:
        return list(config.channels[name])
    for search in config.searches:
        if search.name == name:
            return list(search.targets)
    for target in everything.values():
        if name in (target.label, target.url):
            return [target]
    choices = list(config.channels) + [s.name for s in config.searches]
    raise ConfigClickError(
        f"{config.source}: no channel, search or target named {name!r}{suggest(name, choices)}"
    )


@cli.command("test-notify")
@config_option
@click.argument("target", required=False)
def test_notify(config_path: str, target: str | None) -> None:
    """Send a sample alert to every target (or one channel, search or URL) and report each.

    \b
    Examples:
      alertd test-notify -c alerts.yaml
      alertd test-notify -c alerts.yaml team-slack
    """
    from alertd.deliver import send

    config = read_config(config_path)
    sample = Message((Item(SAMPLE_JOB, ("test-notify",)),))
    failed = 0
    for each in pick_targets(config, target):
        # A sample must not wake a community: its roles are shown (a wrong ID reads as
        # an unknown role) but pinged only by real alerts.
        outcome = send(each, sample, config.send_timeout, config.tz, ping=False)
        if outcome.accepted:
            shown = " (its roles shown, not pinged)" if each.mention_roles else ""
            click.echo(f"ok      {each.label}: accepted{shown}")
        else:
            failed += 1
            click.echo(f"FAILED  {each.label}: {outcome.error}")
    if failed:
        sys.exit(1)


@cli.command()
@config_option
@click.argument("search")
@click.option(
    "--explain", is_flag=True, help="Also list the jobs the search's own filters drop, and why."
)
def preview(config_path: str, search: str, explain: bool) -> None:
    """List the open jobs SEARCH matches right now; nothing is sent or recorded.

    The API's filters (q, category, language, country, payType) choose the jobs; the
    search's own (min_pay, exclude, experience, ...) then drop some: --explain shows
    each dropped job with the filter that dropped it.

    \b
    Examples:
      alertd preview -c alerts.yaml spanish-audio
      alertd preview -c alerts.yaml spanish-audio --explain
    """
    from alertd.pipeline import make_client

    config = read_config(config_path)
    try:
        saved = config.search(search)
        with make_client(config) as client:
            result = client.search_jobs(saved.query())
    except AlertdError as exc:
        fail(exc)
    now = datetime.now(UTC)
    shown = dropped = 0
    for job in result.jobs:
        reason = "not open (closed or past validThrough)" if not is_open(job, now) else None
        reason = reason or why_dropped(job, saved.filters)
        line = (
            f"{show_time(job.date_posted, config.tz)}  {defang(job.title, 120)}  "
            f"[{describe_pay(job.pay)}]  {safe_link(job.url) or ''}"
        )
        if reason is None:
            shown += 1
            click.echo(line)
        else:
            dropped += 1
            if explain:
                why = "".join(c for c in reason if c.isprintable())[:200]  # to a terminal
                click.echo(f"dropped  {line}\n         by {why}")
    skipped = f", {result.skipped} malformed jobs skipped" if result.skipped else ""
    hint = "" if explain or not dropped else " (--explain shows why)"
    click.echo(
        f"{shown} open jobs match {saved.name!r} now, {dropped} dropped{hint}{skipped} "
        "(nothing sent or recorded)"
    )


@cli.command()
@config_option
@click.option(
    "--api-url", default=None, help=f"API base URL [default: from config, else {DEFAULT_API_URL}]"
)
def facets(config_path: str, api_url: str | None) -> None:
    """Print the filter values OpenTrain accepts now, with job counts.

    \b
    Example:
      alertd facets --api-url http://127.0.0.1:8080
    """
    config = None
    if Path(config_path).exists() and api_url is None:
        config = read_config(config_path, need_secrets=False)
    elif Path(config_path).exists():  # only for its state_dir's budget: may be unfinished
        with suppress(ConfigError):
            config = check_config(config_path, need_secrets=False)
    if config is None or api_url is not None:
        setup_logging("WARNING")
    url = api_url or (config.api_url if config else DEFAULT_API_URL)
    try:
        with quick_client(url, config) as client:
            counts = client.facet_counts()
    except ApiError as exc:
        raise click.ClickException(f"could not fetch facets: {exc}") from None
    for key, values in counts.items():
        click.echo(f"{key}:")
        for value, count in values:
            click.echo(f"  {value} ({count})")


@cli.command()
@config_option
def status(config_path: str) -> None:
    """Show what is still owed to each target, and why.

    \b
    Example:
      alertd status -c alerts.yaml
    """
    config = read_config(config_path, need_secrets=False)
    try:
        (config.state_dir / "feed.json").stat()
        has_state = True
    except FileNotFoundError:
        has_state = False
    except OSError as exc:  # e.g. the daemon's 0700 state dir, asked as another user
        fail(
            StoreError(
                f"cannot read the state in {config.state_dir}: {exc.strerror}; "
                "ask as the user alertd runs as, or as root"
            )
        )
    if not has_state:
        click.echo(
            f"no state in {config.state_dir} yet: alertd has not completed a cycle with "
            "this state_dir (start it with `alertd run`, or check state_dir / "
            "ALERTD_STATE_DIR / STATE_DIRECTORY point where the daemon keeps it)"
        )
        sys.exit(1)
    targets = {t.key: t for s in config.searches for t in s.targets}
    labels = {key: t.label for key, t in targets.items()}
    # An inline URL is known by a digest of it, ${VAR} included: without the variable
    # (an operator's shell) its rows cannot be matched to it.
    unset = any(t.url and "${" in t.url and t.key.startswith("url:") for t in targets.values())
    gone = (
        "(an inline URL whose ${VAR} is not set here, or a target no longer in config)"
        if unset
        else "(target no longer in config)"
    )
    with open_store(config, dry_run=True) as store:  # a snapshot: works beside a running daemon
        counts = store.counts()
        rows = store.owed_rows()
        oldest = store.oldest_owed(targets)
        alerts = [store.alert_for(row) for row in rows]
        aside = {name: len(kept) for name, kept in store.quarantine.items() if kept}
    click.echo(f"state: {config.state_dir}  sent: {counts['sent']}  owed: {len(rows)}")
    for name, count in aside.items():
        click.echo(
            f"  {count} malformed rows set aside in {config.state_dir / (name + '.json')} "
            "(its 'quarantine' table), kept for you to inspect; they are not sent"
        )
    for row, alert in zip(rows, alerts, strict=True):
        label = labels.get(row.target, gone)
        held = " (held: job changed, confirming it is still open)" if row.status == "held" else ""
        if row.refused_by:
            held += (
                " (refused for good: fix the URL or token; a channel's new URL, a restart "
                "or a SIGHUP of alertd run tries it at once)"
            )
        upcoming = row.next_attempt_at
        target = targets.get(row.target)
        if target is not None and target.pace.gathers and row.target in oldest:
            release = release_at(target.pace, oldest[row.target], config.tz)
            if release > upcoming:
                upcoming = release
                held += " (gathered for its channel's batch, digest or quiet hours)"
        click.echo(
            f"  {label}: job {defang(row.job_id, 64)} "
            f"({defang(alert.job.title, 120)}){held}, "
            f"{plural(row.attempts, 'attempt')}, next "
            f"{show_time(upcoming, config.tz)}, "
            f"last error: {row.last_error or '-'}"
        )


@cli.command()
@config_option
@click.option(
    "--max-age",
    type=float,
    default=None,
    help="Seconds since the last cycle that still count as healthy "
    "[default: 3 poll intervals + 60].",
)
@click.option(
    "--max-unreachable",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_UNREACHABLE,
    show_default=True,
    help="Cycles in a row without an answer from the API (or with every search asked "
    "failing) that still count as healthy.",
)
@click.option(
    "--max-owed-age",
    type=float,
    default=DEFAULT_MAX_OWED_AGE,
    show_default=True,
    help="Seconds an alert may stay owed (its target down or refusing) and still be healthy.",
)
def health(
    config_path: str, max_age: float | None, max_unreachable: int, max_owed_age: float
) -> None:
    """Exit 0 when the daemon is doing its job, 1 otherwise, with one line saying why.

    Reads heartbeat.json, which `alertd run` rewrites after every cycle. Unhealthy when
    no cycle ended recently (stopped, or stuck in one), when the API could not be
    reached, or failed every search asked, for several cycles in a row, or when an
    alert has been owed too long.

    \b
    Example:
      alertd health -c /data/alerts.yaml
    """
    from alertd.daemon import HEARTBEAT_FILE

    try:  # Docker reserves exit 2 in a health check: every failure here is a 1
        config = check_config(config_path, need_secrets=False)
    except ConfigError as exc:
        unhealthy(f"config error: {exc.describe()}")
    setup_logging(config.log_level, config.secrets)
    defaults = HealthLimits.for_interval(config.poll_interval)
    limits = HealthLimits(
        max_age if max_age is not None else defaults.max_age, max_unreachable, max_owed_age
    )
    path = config.state_dir / HEARTBEAT_FILE
    try:
        beat = read_heartbeat(path)
    except PermissionError:
        unhealthy(f"cannot read {path}: permission denied; ask as the user alertd runs as")
    verdict = judge_health(beat, path, datetime.now(UTC), limits, config.tz, process_running)
    click.echo(verdict.line)
    sys.exit(0 if verdict.healthy else 1)


def unhealthy(reason: str) -> NoReturn:
    """One line on why, and exit status 1."""
    click.echo(f"unhealthy: {reason}")
    sys.exit(1)


@cli.command()
@click.option(
    "--duration", default=30.0, show_default=True, help="Seconds to run; 0 runs until Ctrl-C."
)
@click.option(
    "--every",
    default=3.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="Seconds between new simulated jobs.",
)
@click.option(
    "--seed", default=None, type=int, help="Seed for the simulated jobs (repeatable runs)."
)
def demo(duration: float, every: float, seed: int | None) -> None:
    """See alertd work in seconds, offline, with no accounts.

    Starts a simulated marketplace on 127.0.0.1 that publishes a job every few
    seconds, and runs the daemon against it with two sample searches whose
    alerts print here. The first poll is silent: it only records what exists.

    \b
    Example:
      alertd demo --duration 20
    """
    from alertd.demo import run_demo  # the stand-in server is loaded only for the demo

    setup_logging("INFO")
    run_demo(duration, every, seed, announce=lambda line: click.echo(line, err=True))


cli.add_command(init)
cli.add_command(standin)


def main() -> None:
    """Entry point of the ``alertd`` script (after ``start``'s TZ check, which is
    asked again here for an install whose script still starts here)."""
    problem = tz_problem()
    if problem is not None:
        exit_for_tz(problem, sys.argv[1:])
    try:
        cli(standalone_mode=True)
    except ConfigError as exc:  # the environment's proxy, found when the API client is made
        click.echo(f"Error: {exc.describe()}", err=True)
        sys.exit(2)
    except StoreError as exc:  # pragma: no cover - commands translate their own
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
