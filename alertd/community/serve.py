"""``serve_community``: the page on waitress, in a thread of ``alertd run``.

waitress reads and writes on one event loop and runs the app on a few worker threads,
so a slow or half-open connection costs a socket, not a thread: ``CONNECTION_LIMIT``
caps the sockets (the daemon's state writes always have descriptors left), and a
connection silent for ``CHANNEL_TIMEOUT`` seconds is closed.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from pathlib import Path

from waitress import wasyncore
from waitress.server import create_server

from alertd.community.app import DaemonStatus, Page, create_app
from alertd.community.config import CommunitySpec
from alertd.community.lookup import Lookup
from alertd.community.mail import send_mail
from alertd.community.page import Limits, kept_mail_limit
from alertd.community.postman import Postman, Send
from alertd.community.provider import MemberSearches
from alertd.config import Config
from alertd.errors import PortError
from alertd.feeds import Feeds, public_feeds
from alertd.health import read_heartbeat
from alertd.members import Members
from alertd.models import parse_time
from alertd.subscriptions import Subscriptions, of_config

log = logging.getLogger(__name__)

THREADS = 4
CONNECTION_LIMIT = 200
CHANNEL_TIMEOUT = 30
CLEANUP_INTERVAL = 5
TRUSTED_PROXY = "127.0.0.1"
HEARTBEAT_FILE = "heartbeat.json"  # daemon.HEARTBEAT_FILE (not imported: no cycle here)


def heartbeat_status(state_dir: Path) -> Callable[[], DaemonStatus]:
    """The status page's view of the daemon, from its heartbeat file."""

    def status() -> DaemonStatus:
        try:
            beat = read_heartbeat(state_dir / HEARTBEAT_FILE)
        except PermissionError:
            beat = None
        if beat is None:
            return DaemonStatus()
        unreachable = beat.get("unreachable_cycles")
        return DaemonStatus(
            last_cycle_ended=parse_time(beat.get("at")),
            api_answers=None if not isinstance(unreachable, int) else unreachable == 0,
        )

    return status


class CommunityServer:
    """The page, served until ``close``; ``url`` is where it listens."""

    def __init__(
        self, page: Page, host: str, port: int, channel_timeout: int = CHANNEL_TIMEOUT
    ) -> None:
        self.page = page
        try:
            self.server = create_server(
                create_app(page),
                host=host,
                port=port,
                threads=THREADS,
                connection_limit=CONNECTION_LIMIT,
                channel_timeout=channel_timeout,
                cleanup_interval=min(CLEANUP_INTERVAL, channel_timeout),
                max_request_body_size=64 * 1024,
                ident="alertd",
                # A reverse proxy on this host says who the member is: the address it
                # appended last to X-Forwarded-For (the rate limits count by it). From
                # anyone else the header is dropped.
                trusted_proxy=TRUSTED_PROXY,
                trusted_proxy_count=1,
                trusted_proxy_headers={"x-forwarded-for"},
                clear_untrusted_proxy_headers=True,
            )
        except OSError as exc:
            raise PortError(
                f"community.listen {host}:{port} cannot be opened: {exc.strerror or exc}"
            ) from None
        self.thread = threading.Thread(target=self._run, name="community", daemon=True)
        self.provider = MemberSearches(page.members, page.spec)
        self._public_names: tuple[str, ...] | None = None

    def subscriptions(self, config: Config) -> Subscriptions:
        """A cycle's saved searches: the YAML's, then the members' (live at the next
        cycle after a sign-up, without a reload)."""
        self.serve_public_feeds(config)
        public = of_config(config.searches, config.owner, self.page.spec.public_url)
        return Subscriptions.gather([public, self.provider])

    def serve_public_feeds(self, config: Config) -> None:
        """Serve the public feeds of ``config``'s searches that opt in (``feed: true``),
        and only those: a summary's "+N more" links there."""
        names = tuple(s.name for s in config.searches if s.feed)
        if names != self._public_names:
            self.page.public_feeds = public_feeds(names)
            self._public_names = names

    def _run(self) -> None:
        with contextlib.suppress(OSError, ValueError):  # sockets closed under the loop
            self.server.run()

    def start(self) -> CommunityServer:
        """Serve on a thread; returns self."""
        self.thread.start()
        return self

    @property
    def port(self) -> int:
        """The port it listens on (the one the OS chose for port 0)."""
        return int(self.server.effective_port)  # type: ignore[union-attr]

    @property
    def url(self) -> str:
        """Where it listens, e.g. ``http://127.0.0.1:8080``."""
        host = str(self.server.effective_host)  # type: ignore[union-attr]
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"

    def close(self) -> None:
        """Stop serving, send the mails already queued, release the API client."""
        self.server.close()
        self.server.task_dispatcher.shutdown(timeout=5)
        wasyncore.close_all(self.server._map)  # type: ignore[union-attr]
        self.thread.join(5)
        self.page.postman.close()
        if self.page.lookup is not None:
            self.page.lookup.close()


def serve_community(
    spec: CommunitySpec,
    members: Members,
    *,
    api_url: str,
    state_dir: Path,
    requests_per_minute: int,
    status: Callable[[], DaemonStatus] | None = None,
    tz_name: str = "UTC",
    send: Send = send_mail,
    port: int | None = None,
    channel_timeout: int = CHANNEL_TIMEOUT,
    feeds: object | None = None,
) -> CommunityServer:
    """Serve ``spec``'s page on ``spec.listen`` (or ``port``) in a thread; ``close()``
    stops it. The page's API calls share ``state_dir``'s request window; ``feeds`` (an
    ``alertd.feeds.Feeds``) serves the members' Atom feeds at ``/feed/<token>.atom``."""
    page = Page(
        spec=spec,
        members=members,
        lookup=Lookup.for_config(api_url, state_dir, requests_per_minute),
        postman=Postman(spec.mail, send),
        status=status or heartbeat_status(state_dir),
        tz_name=tz_name,
        feeds=feeds,
        limits=Limits(mail_per_address=kept_mail_limit(state_dir, members)),
    )
    server = CommunityServer(page, spec.host, spec.port if port is None else port, channel_timeout)
    log.info("community page on %s (members reach it at %s)", server.url, spec.public_url)
    return server.start()


def serve_configured(config: Config, dry_run: bool = False) -> CommunityServer | None:
    """The page ``alertd run`` serves when its config has ``community:`` (none in a dry
    run: it would sign people up to a daemon that sends nothing). PortError if
    ``community.listen`` cannot be opened."""
    spec = config.community
    if spec is None or dry_run:
        return None
    server = serve_community(
        spec,
        Members.open(config.state_dir),
        api_url=config.api_url,
        state_dir=config.state_dir,
        requests_per_minute=config.requests_per_minute,
        tz_name=str(getattr(config.tz, "key", None) or config.tz),
        feeds=Feeds.open(config.state_dir),
    )
    server.serve_public_feeds(config)
    return server
