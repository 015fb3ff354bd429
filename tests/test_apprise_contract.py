"""What alertd relies on inside apprise, pinned: these fail when an apprise release moves it.

alertd reads a few of apprise's plugin attributes (where a Discord or Slack URL posts,
the timeouts it sets) and the wording of its failure log (``error=404``) to tell a
refused-for-good target from a down one. pyproject bounds apprise below its next major
version; these tests say what to check before lifting that bound.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import apprise
import pytest

from alertd.deliver import send_apprise, webhook_for
from alertd.targets import redact_url
from tests.webhook import WebhookCollector

DISCORD = "discord://4174216298/JHMHI8qBe7bk2ZwO5U711o3dV_js"
SLACK = "slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ"
TELEGRAM = "tgram://123456789:abcdefg_hijklmnop/-1001234"


@pytest.fixture
def collector() -> Iterator[WebhookCollector]:
    server = WebhookCollector()
    yield server
    server.stop()


def test_instantiate_returns_a_plugin_or_none() -> None:
    assert apprise.Apprise.instantiate(DISCORD, suppress_exceptions=True) is not None
    assert apprise.Apprise.instantiate("nosuch://x", suppress_exceptions=True) is None


def test_private_url_form_hides_tokens() -> None:
    plugin = apprise.Apprise.instantiate(TELEGRAM, suppress_exceptions=True)
    private = str(plugin.url(privacy=True))
    assert private.startswith("tgram://")
    assert "abcdefg_hijklmnop" not in private
    assert "abcdefg_hijklmnop" not in redact_url(TELEGRAM)


def test_timeouts_are_plugin_attributes_it_uses() -> None:
    plugin = apprise.Apprise.instantiate("json://127.0.0.1:9/hook", suppress_exceptions=True)
    assert isinstance(plugin.socket_read_timeout, float)
    assert isinstance(plugin.socket_connect_timeout, float)
    plugin.socket_read_timeout = 12.5
    assert plugin.request_timeout[1] == 12.5  # what it hands to requests


def test_discord_and_slack_webhook_attributes() -> None:
    discord = webhook_for(DISCORD)
    assert discord is not None
    assert discord.endpoint == (
        "https://discord.com/api/webhooks/4174216298/JHMHI8qBe7bk2ZwO5U711o3dV_js"
    )
    slack = webhook_for(SLACK)
    assert slack is not None
    assert slack.endpoint == (
        "https://hooks.slack.com/services/T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ"
    )


@pytest.mark.parametrize(
    ("status", "permanent", "refused"), [(404, True, False), (400, False, True)]
)
def test_failure_wording_says_the_status(
    collector: WebhookCollector, status: int, permanent: bool, refused: bool
) -> None:
    """apprise logs a refused post as ``... error=404.``; alertd reads the status from it."""
    collector.up.clear()
    collector.down_status = status
    heard: list[str] = []

    class Hear(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            heard.append(record.getMessage())

    hear = Hear(level=logging.WARNING)
    logging.getLogger("apprise").addHandler(hear)
    try:
        outcome = send_apprise(collector.url, "t", "b", timeout=5)
    finally:
        logging.getLogger("apprise").removeHandler(hear)
    assert not outcome.accepted
    assert any(f"error={status}" in line for line in heard), heard
    assert outcome.permanent is permanent
    assert outcome.refused_message is refused
