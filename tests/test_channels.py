"""Delivery as each service sees it: Slack, Discord and Telegram behind a TLS-intercepting
proxy, e-mail through a local SMTP server.

Every test drives alertd the way a user does (``alertd test-notify`` / ``alertd once`` with
a config) and asserts on the requests the services received. Nothing leaves 127.0.0.1:
the proxy answers for the service hosts itself, and ``loopback_only`` fails any attempt
to resolve or connect anywhere else.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result

from alertd.api import OpenTrainClient
from alertd.config import load_config
from alertd.deliver import send
from alertd.market import Market
from alertd.models import Job
from alertd.pipeline import run_once, utc_now
from alertd.store import Store
from tests.servers import (
    DISCORD_HOST,
    SLACK_HOST,
    TELEGRAM_HOST,
    CapturedRequest,
    SMTPCollector,
    TLSInterceptProxy,
)
from tests.world import strings_in

SLACK_TOKENS = ("T1JJ3T3L2", "A1BRTD4JD", "TIiajkdnlazkcOXrIdevi7FQ")
SLACK_URL = "slack://" + "/".join(SLACK_TOKENS)
SLACK_PATH = "/services/" + "/".join(SLACK_TOKENS)

DISCORD_ID = "4174216298"
DISCORD_TOKEN = "JHMHI8qBe7bk2ZwO5U711o3dV_js"
DISCORD_URL = f"discord://{DISCORD_ID}/{DISCORD_TOKEN}"
DISCORD_PATH = f"/api/webhooks/{DISCORD_ID}/{DISCORD_TOKEN}"

TELEGRAM_BOT_ID = "123456789"
TELEGRAM_SECRET = "ABCdefGhIJKlmnOPqrSTUvwxYZ"
TELEGRAM_TOKEN = f"{TELEGRAM_BOT_ID}:{TELEGRAM_SECRET}"
TELEGRAM_CHAT = 987654321
TELEGRAM_URL = f"tgram://{TELEGRAM_TOKEN}/{TELEGRAM_CHAT}/"
TELEGRAM_PATH = f"/bot{TELEGRAM_TOKEN}/sendMessage"

SECRETS = (*SLACK_TOKENS, DISCORD_ID, DISCORD_TOKEN, TELEGRAM_BOT_ID, TELEGRAM_SECRET)

WEB_HOSTS = (SLACK_HOST, DISCORD_HOST, TELEGRAM_HOST)

# Text a job poster controls, written to ping, format, script and phish in every channel.
HOSTILE = {
    "title": "@everyone <b>bold</b> <script>alert(1)</script> [click](https://evil.example)",
    "companyName": "<!channel> @here",
    "summary": "<@123456> <!here> @everyone [click](https://evil.example) <script>x()</script>",
}


# -- fixtures --------------------------------------------------------------------


@pytest.fixture
def tls_proxy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[TLSInterceptProxy]:
    """Slack, Discord and Telegram on 127.0.0.1, reached the way apprise reaches them.

    Starts a ``TLSInterceptProxy``, writes its throwaway CA to a file and points
    ``HTTPS_PROXY`` and ``REQUESTS_CA_BUNDLE`` at them, so ``requests`` (apprise) sends
    every ``https://hooks.slack.com/...``, ``https://discord.com/...`` and
    ``https://api.telegram.org/...`` call through the proxy and trusts its certificate.
    ``NO_PROXY`` (set by ``clean_environ``) keeps the stand-in API off the proxy.
    Fails the test if a CONNECT was refused or a TLS handshake broke.
    """
    proxy = TLSInterceptProxy().start()
    try:
        ca_file = proxy.write_ca(tmp_path / "tls-proxy-ca.pem")
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca_file))
        yield proxy
    finally:
        proxy.stop()
    assert proxy.refused == [], f"the proxy refused: {proxy.refused}"
    assert proxy.errors == [], f"tunnel errors: {proxy.errors}"


@pytest.fixture
def smtp_server() -> Iterator[SMTPCollector]:
    """A plain SMTP server on 127.0.0.1 (OS-chosen port) that keeps what it receives.

    ``smtp_server.mailto()`` is the apprise URL for it: ``mailto://`` means no TLS,
    and with no user in the URL apprise does not log in.
    """
    server = SMTPCollector().start()
    yield server
    server.stop()


# -- helpers ---------------------------------------------------------------------

WriteConfig = Callable[..., Path]
RunCli = Callable[..., Result]


def channels_config(write_config: WriteConfig, channels: dict[str, str], extra: str = "") -> Path:
    """alerts.yaml with ``channels`` and one unfiltered search that notifies all of them."""
    lines = [extra.strip()] if extra.strip() else []
    lines.append("channels:")
    lines += [f"  {name}: {json.dumps(url)}" for name, url in channels.items()]
    lines += [
        "searches:",
        "  - name: everything",
        f"    notify: [{', '.join(channels)}]",
    ]
    return write_config("\n".join(lines) + "\n")


def every_channel(smtp_server: SMTPCollector) -> dict[str, str]:
    """Slack, Discord, Telegram and email, each as its own channel."""
    return {
        "slack": SLACK_URL,
        "discord": DISCORD_URL,
        "telegram": TELEGRAM_URL,
        "mail": smtp_server.mailto(),
    }


def prime_and_publish(run_cli: RunCli, market: Market, config: Path, **job: Any) -> dict[str, Any]:
    """Prime the search (its first ``once`` is silent), then publish a job it matches."""
    primed = run_cli("once", "-c", config)
    assert primed.exit_code == 0, primed.output
    return market.add_job(**job)


def one(requests: list[CapturedRequest]) -> CapturedRequest:
    """The only request in ``requests``."""
    assert len(requests) == 1, [(r.method, r.path, r.status) for r in requests]
    return requests[0]


def mail_text(mail: Any) -> str:
    return "\n".join(mail.text_parts())


GOOD_JOB = {
    "title": "Transcribe Bavarian dialect interviews",
    "companyName": "Polyglot AI",
    "summary": "Two-hour interviews, verbatim transcripts.",
    "pay": {
        "paymentType": "PAY_PER_HOUR",
        "currency": "USD",
        "hourlyMin": 27,
        "hourlyMax": 33,
        "hourlyRate": None,
        "fixedPrice": None,
        "perLabelRate": None,
    },
}
GOOD_PAY = "$27–$33/hour"
HOSTILE_JOB = Job(id="h-1", title=HOSTILE["title"], company=HOSTILE["companyName"])


# -- each service receives the alert where it listens ------------------------------


def test_test_notify_sends_the_sample_to_every_channel(
    tls_proxy: TLSInterceptProxy,
    smtp_server: SMTPCollector,
    write_config: WriteConfig,
    run_cli: RunCli,
) -> None:
    config = channels_config(write_config, every_channel(smtp_server))

    result = run_cli("test-notify", "-c", config)

    assert result.exit_code == 0, result.output
    for name in ("slack", "discord", "telegram", "mail"):
        assert re.search(rf"^ok\s+{name}: accepted$", result.stdout, re.M), result.stdout
    slack = one(tls_proxy.requests(SLACK_HOST))
    discord = one(tls_proxy.requests(DISCORD_HOST))
    telegram = one(tls_proxy.requests(TELEGRAM_HOST))
    assert (slack.method, slack.path) == ("POST", SLACK_PATH)
    assert (discord.method, discord.path) == ("POST", DISCORD_PATH)
    assert (telegram.method, telegram.path) == ("POST", TELEGRAM_PATH)
    sample = "Sample alert: Spanish podcast transcription"
    assert sample in slack.json["blocks"][0]["text"]["text"]
    assert sample in discord.json["embeds"][0]["title"]
    assert sample in telegram.json["text"]
    [mail] = smtp_server.messages
    assert sample in mail.message["Subject"]


def test_test_notify_reports_a_service_that_refuses(
    tls_proxy: TLSInterceptProxy, write_config: WriteConfig, run_cli: RunCli
) -> None:
    tls_proxy.down(DISCORD_HOST, 503)
    config = channels_config(write_config, {"slack": SLACK_URL, "discord": DISCORD_URL})

    result = run_cli("test-notify", "-c", config)

    assert result.exit_code == 1
    assert re.search(r"^ok\s+slack: accepted$", result.stdout, re.M), result.stdout
    assert re.search(r"^FAILED\s+discord: .*503", result.stdout, re.M), result.stdout
    assert [r.status for r in tls_proxy.requests(DISCORD_HOST)] == [503]


def test_slack_webhook_receives_a_new_job(
    tls_proxy: TLSInterceptProxy, market: Market, write_config: WriteConfig, run_cli: RunCli
) -> None:
    config = channels_config(write_config, {"slack": SLACK_URL})
    job = prime_and_publish(run_cli, market, config, **GOOD_JOB)
    assert tls_proxy.requests() == [], "priming must send nothing"

    result = run_cli("once", "-c", config)

    assert result.exit_code == 0, result.output
    request = one(tls_proxy.requests(SLACK_HOST))
    assert (request.method, request.path) == ("POST", SLACK_PATH)
    assert request.headers["Content-Type"].startswith("application/json")
    blocks = request.json["blocks"]
    assert request.json["text"] == f"New OpenTrain job: {GOOD_JOB['title']}"
    # The title is the link; pay, company and summary are plain text beside it.
    assert blocks[0]["text"] == {
        "type": "mrkdwn",
        "text": f"*New OpenTrain job:* <{job['url']}|{GOOD_JOB['title']}>",
    }
    shown = strings_in(blocks)
    assert f"Pay: {GOOD_PAY}" in shown
    assert any(GOOD_JOB["summary"] in text for text in shown)


def test_discord_webhook_receives_a_new_job(
    tls_proxy: TLSInterceptProxy, market: Market, write_config: WriteConfig, run_cli: RunCli
) -> None:
    config = channels_config(write_config, {"discord": DISCORD_URL})
    job = prime_and_publish(run_cli, market, config, **GOOD_JOB)

    result = run_cli("once", "-c", config)

    assert result.exit_code == 0, result.output
    request = one(tls_proxy.requests(DISCORD_HOST))
    assert (request.method, request.path, request.status) == ("POST", DISCORD_PATH, 204)
    assert request.json["allowed_mentions"] == {"parse": []}
    [embed] = request.json["embeds"]
    assert embed["title"] == GOOD_JOB["title"]
    assert embed["url"] == job["url"]
    assert {"name": "Pay", "value": GOOD_PAY, "inline": True} in embed["fields"]
    assert embed["description"].startswith("Polyglot AI")
    assert embed["footer"]["text"] == "Matched: everything"


def test_telegram_bot_receives_a_new_job(
    tls_proxy: TLSInterceptProxy, market: Market, write_config: WriteConfig, run_cli: RunCli
) -> None:
    config = channels_config(write_config, {"telegram": TELEGRAM_URL})
    job = prime_and_publish(run_cli, market, config, **GOOD_JOB)

    result = run_cli("once", "-c", config)

    assert result.exit_code == 0, result.output
    request = one(tls_proxy.requests(TELEGRAM_HOST))
    assert (request.method, request.path) == ("POST", TELEGRAM_PATH)
    assert request.json["chat_id"] == TELEGRAM_CHAT
    assert request.json["parse_mode"] == "HTML"
    text = request.json["text"]
    assert text.startswith("<b>New OpenTrain job</b>")
    assert f'<b><a href="{job["url"]}">{GOOD_JOB["title"]}</a></b>' in text
    assert GOOD_PAY in text


def test_email_receives_a_new_job(
    smtp_server: SMTPCollector, market: Market, write_config: WriteConfig, run_cli: RunCli
) -> None:
    config = channels_config(write_config, {"mail": smtp_server.mailto()})
    job = prime_and_publish(run_cli, market, config, **GOOD_JOB)
    assert smtp_server.messages == []

    result = run_cli("once", "-c", config)

    assert result.exit_code == 0, result.output
    [mail] = smtp_server.messages
    assert mail.mail_from == "alertd@example.com"
    assert mail.rcpt_tos == ("annotator@example.com",)
    assert GOOD_JOB["title"] in mail.message["Subject"]
    assert "annotator@example.com" in mail.message["To"]
    body = mail_text(mail)
    assert GOOD_PAY in body
    assert job["url"] in body
    assert "Polyglot AI" in body


# -- text a job poster wrote is inert everywhere -----------------------------------


def test_untrusted_job_text_is_inert_in_every_channel(
    tls_proxy: TLSInterceptProxy,
    smtp_server: SMTPCollector,
    market: Market,
    write_config: WriteConfig,
    run_cli: RunCli,
) -> None:
    config = channels_config(write_config, every_channel(smtp_server))
    prime_and_publish(run_cli, market, config, **HOSTILE)

    result = run_cli("once", "-c", config)
    assert result.exit_code == 0, result.output

    # Discord: nothing may ping; the words are still there to read.
    discord = one(tls_proxy.accepted(DISCORD_HOST)).json
    for key in ("allow_mentions", "allowed_mentions"):
        parse = (discord.get(key) or {}).get("parse") or []
        assert "everyone" not in parse and "here" not in parse, discord
    for text in strings_in(discord):
        for mention in ("@everyone", "@here", "<@123456>"):
            assert mention not in text, (mention, text)
    assert discord["allowed_mentions"] == {"parse": []}
    assert "everyone" in discord["embeds"][0]["title"] and "bold" in discord["embeds"][0]["title"]

    # Slack: no special mentions or user mentions in any field.
    slack = one(tls_proxy.accepted(SLACK_HOST)).json
    for text in strings_in(slack):
        for mention in ("<!channel>", "<!here>", "<@123456>", "<!everyone>"):
            assert mention not in text, (mention, text)
    assert "bold" in slack["text"] and "bold" in slack["blocks"][0]["text"]["text"]

    # Telegram (HTML parse mode): the only tags are ours (bold, italic, the job's link).
    telegram = one(tls_proxy.accepted(TELEGRAM_HOST)).json["text"]
    tags = set(re.findall(r"<[^>]*>", telegram))
    assert tags <= {"<b>", "</b>", "<i>", "</i>", "</a>"} | {
        t for t in tags if re.fullmatch(r'<a href="https://[^"]*/jobs/[^"]*">', t)
    }, tags
    assert "bold" in telegram and "alert(1)" in telegram

    # E-mail: no markup from the job in the subject or the HTML part (escaped there);
    # the plain-text part shows the same text literally, which no client renders.
    [mail] = smtp_server.messages
    page = mail.message.get_body(("html",)).get_content()
    for text in (mail.message["Subject"], page):
        assert "<b>" not in text and "<script" not in text.lower(), text
        assert "<!channel>" not in text, text
    assert "&lt;b&gt;bold" in page
    assert "bold" in mail.message["Subject"]
    assert mail.message.get_body(("plain",)).get_content_type() == "text/plain"


def test_discord_shows_no_masked_link_from_job_text(
    tls_proxy: TLSInterceptProxy, market: Market, write_config: WriteConfig, run_cli: RunCli
) -> None:
    config = channels_config(write_config, {"discord": DISCORD_URL})
    prime_and_publish(run_cli, market, config, **HOSTILE)

    result = run_cli("once", "-c", config)

    assert result.exit_code == 0, result.output
    embed = one(tls_proxy.accepted(DISCORD_HOST)).json["embeds"][0]
    for content in strings_in(embed):
        assert not re.search(r"\[[^\]\n]*\]\(\s*<?https?://", content), content  # no masked link
        assert "https://evil" not in content, content  # ... and no bare one
    assert "evil" in embed["title"]  # the text is delivered
    assert embed["url"].startswith("https://app.opentrain.ai/jobs/")  # the only link is ours


# -- a service that is down gets the job later, once; the others never again -------


def test_a_down_target_gets_the_job_once_when_back_and_the_others_never_again(
    tls_proxy: TLSInterceptProxy, market: Market, write_config: WriteConfig, run_cli: RunCli
) -> None:
    config = channels_config(
        write_config, {"slack": SLACK_URL, "discord": DISCORD_URL, "telegram": TELEGRAM_URL}
    )
    tls_proxy.down(TELEGRAM_HOST, 500)
    prime_and_publish(run_cli, market, config, **GOOD_JOB)

    first = run_cli("once", "-c", config)

    assert first.exit_code == 1, first.output
    assert "1 send failed" in first.stderr
    assert len(tls_proxy.accepted(SLACK_HOST)) == 1
    assert len(tls_proxy.accepted(DISCORD_HOST)) == 1
    assert [r.status for r in tls_proxy.requests(TELEGRAM_HOST)] == [500]

    tls_proxy.up(TELEGRAM_HOST)
    too_soon = run_cli("once", "-c", config)  # the retry is not due for another minute

    assert too_soon.exit_code == 0, too_soon.output
    assert len(tls_proxy.requests(TELEGRAM_HOST)) == 1

    loaded = load_config(config)
    later = utc_now() + timedelta(minutes=2)
    with Store.open(loaded.state_dir) as store, OpenTrainClient(loaded.api_url) as client:
        report = run_once(loaded, client, store, send, clock=lambda: later)

    assert report.ok and report.sent == 1 and report.owed == 0, report.summary()
    retried = one(tls_proxy.accepted(TELEGRAM_HOST))
    assert retried.path == TELEGRAM_PATH
    assert GOOD_JOB["title"] in retried.json["text"]
    assert len(tls_proxy.requests(SLACK_HOST)) == 1
    assert len(tls_proxy.requests(DISCORD_HOST)) == 1

    after = run_cli("once", "-c", config)

    assert after.exit_code == 0, after.output
    assert {host: len(tls_proxy.requests(host)) for host in WEB_HOSTS} == {
        SLACK_HOST: 1,
        DISCORD_HOST: 1,
        TELEGRAM_HOST: 2,
    }


# -- secrets never reach a log ------------------------------------------------------


def assert_no_secret(result: Result) -> None:
    shown = result.stdout + result.stderr
    for secret in SECRETS:
        assert secret not in shown, f"{secret!r} leaked into the CLI output"


def test_debug_log_never_shows_service_tokens(
    tls_proxy: TLSInterceptProxy, write_config: WriteConfig, run_cli: RunCli
) -> None:
    config = channels_config(
        write_config,
        {"slack": SLACK_URL, "discord": DISCORD_URL, "telegram": TELEGRAM_URL},
        extra="log_level: DEBUG",
    )

    result = run_cli("test-notify", "-c", config)

    assert result.exit_code == 0, result.output
    assert_no_secret(result)
    # The lines that would carry the tokens were written (masked), so this is no vacuous pass.
    for line in ("Slack POST URL", "Discord POST URL", "Telegram POST URL"):
        assert line in result.stderr
    # ... and the services did get the tokens.
    assert one(tls_proxy.accepted(TELEGRAM_HOST)).path == TELEGRAM_PATH
    assert one(tls_proxy.accepted(DISCORD_HOST)).path == DISCORD_PATH
    assert one(tls_proxy.accepted(SLACK_HOST)).path == SLACK_PATH


def test_debug_log_never_shows_service_tokens_when_sends_fail(
    tls_proxy: TLSInterceptProxy,
    market: Market,
    state_dir: Path,
    write_config: WriteConfig,
    run_cli: RunCli,
) -> None:
    for host in WEB_HOSTS:
        tls_proxy.down(host, 500)
    config = channels_config(
        write_config,
        {"slack": SLACK_URL, "discord": DISCORD_URL, "telegram": TELEGRAM_URL},
        extra="log_level: DEBUG",
    )

    notified = run_cli("test-notify", "-c", config)
    prime_and_publish(run_cli, market, config, **GOOD_JOB)
    polled = run_cli("once", "-c", config)
    status = run_cli("status", "-c", config)

    assert notified.exit_code == 1 and polled.exit_code == 1
    assert "Response Details" in notified.stderr  # apprise's failure detail was logged
    for result in (notified, polled, status):
        assert_no_secret(result)
    stored = "".join(p.read_text() for p in state_dir.iterdir() if p.suffix in (".json", ".jsonl"))
    rows = json.loads((state_dir / "outbox.json").read_text())["rows"].values()
    errors = {row["target"]: row["last_error"] for row in rows}
    assert sorted(errors) == ["channel:discord", "channel:slack", "channel:telegram"]
    assert all("500" in error for error in errors.values()), errors  # the errors were stored...
    for secret in SECRETS:
        assert secret not in stored  # ... masked
    assert {host: len(tls_proxy.requests(host)) for host in WEB_HOSTS} == dict.fromkeys(
        WEB_HOSTS, 2
    )


def test_a_failed_send_is_stored_with_the_targets_secrets_masked() -> None:
    # A real apprise plugin (apprise's own decorator) whose failure warning carries its
    # URL, as some services' do: what alertd keeps of it must not.
    from apprise.decorators import notify

    from alertd.deliver import send_apprise

    @notify(on="leaky")
    def leaky(body: str, title: str, notify_type: str, meta: dict[str, str], **_: object) -> bool:
        logging.getLogger("apprise").warning("refused: %s", meta.get("url"))
        return False

    outcome = send_apprise("leaky://user:SuperSecretPw99@127.0.0.1/SecretPathToken77", "t", "b")
    assert not outcome.accepted
    assert outcome.error is not None and outcome.error.startswith("refused: leaky://")
    assert "SuperSecretPw99" not in outcome.error
    assert "SecretPathToken77" not in outcome.error


def test_no_message_is_too_long_for_discord_whatever_the_job_says() -> None:
    from alertd.models import Job, Pay
    from alertd.render import render_alert

    job = Job(
        id="j-1",
        title="T" * 5000,
        company="C" * 5000,
        summary="S " * 20000,
        category="K" * 5000,
        languages=tuple("L" * 100 for _ in range(100)),
        url="https://example.com/" + "a" * 50_000,
        pay=Pay(payment_type="FIXED_PRICE", currency="X" * 1000, fixed_price=1e12),
    )
    title, body = render_alert(job, [f"search-{i}-" + "n" * 100 for i in range(30)], None)
    assert len(title) + len(body) < 2000
    assert "https://app.opentrain.ai/jobs/j-1" in body  # the long link, replaced
    assert "and 25 more" in body


@pytest.mark.parametrize("mark", ["\u200e", "\u200f", "\u061c", "\u009b", "\u202e", "\u2067"])
def test_every_bidi_and_control_character_is_removed_from_job_text(mark: str) -> None:
    from alertd.render import defang

    assert defang(f"Nice{mark}job", 100) == "Nicejob"


@pytest.mark.parametrize("mark", ["\u202e", "\u009b", "\u200f", "\u00a0"])
def test_a_job_link_with_a_bidi_or_control_character_is_not_sent(mark: str) -> None:
    from alertd.models import Job
    from alertd.render import render_alert

    job = Job(id="j-1", url=f"https://app.opentrain.ai/jobs/abc{mark}txt.exe")
    _, body = render_alert(job, ["s"], None)
    assert mark not in body
    assert "https://app.opentrain.ai/jobs/j-1" in body  # the job's own page instead


def test_masking_hides_secrets_and_only_secrets() -> None:
    from alertd.targets import RedactingFilter, url_secrets

    url = "mailtos://alerts:S3cretPw@smtp.example.com?to=me@example.com&from=alerts@example.com"
    mask = RedactingFilter(url_secrets(url))
    line = "sent to smtp.example.com for me@example.com with S3cretPw"
    assert mask.redact(line) == "sent to smtp.example.com for me@example.com with ***"
    encoded = RedactingFilter(url_secrets("mailtos://a:Pa%40ssw0rd@smtp.example.com"))
    assert encoded.redact("login a:Pa%40ssw0rd") == "login a:***"


def test_an_encoded_password_is_masked_whole_in_its_decoded_form_too() -> None:
    from alertd.targets import RedactingFilter, url_secrets

    mask = RedactingFilter(url_secrets("json://user:s3cr%2Ft%3Apass@127.0.0.1:9/x"))
    assert mask.redact("login s3cr/t:pass") == "login ***"


def test_values_from_the_environment_are_masked_only_where_they_are_secret(
    monkeypatch: pytest.MonkeyPatch, write_config: WriteConfig
) -> None:
    from alertd.config import load_config
    from alertd.targets import RedactingFilter

    monkeypatch.setenv("SMTP_USER", "alertd")
    monkeypatch.setenv("DOMAIN", "example.com")
    monkeypatch.setenv("SMTP_PASS", "hunter22x")
    monkeypatch.setenv("HOOK", "hooks")
    config = load_config(
        write_config(
            "channels:\n"
            "  mail: mailtos://${SMTP_USER}:${SMTP_PASS}@smtp.${DOMAIN}?to=me@${DOMAIN}\n"
            "  query: mailtos://smtp.example.com?user=alertd&pass=hunter23y&to=me@x.com\n"
            "searches:\n  - name: a\n    notify: [mail, query, 'json://127.0.0.1:9/${HOOK}']\n"
        )
    )
    mask = RedactingFilter(config.secrets)
    line = "alertd stopped after 3 cycles; sent to smtp.example.com, user pass"
    assert mask.redact(line) == line  # a user name, a domain, apprise's words: shown
    assert mask.redact("login hunter22x / hunter23y") == "login *** / ***"
    # A webhook shows its whole path: what the environment put there is hidden.
    assert mask.redact("posted to hooks") == "posted to ***"
    assert "json://127.0.0.1:9/***" in {t.label for t in config.targets.values()}


def test_a_webhook_token_in_a_payload_field_or_an_all_letters_path_is_masked() -> None:
    from alertd.targets import RedactingFilter, redact_url, url_secrets

    for url, token in [
        ("json://127.0.0.1:9/hook?-token=Zx9Secret77abc", "Zx9Secret77abc"),
        ("json://127.0.0.1:9/hooks/kLmNoPqRsTuVwXyZ", "kLmNoPqRsTuVwXyZ"),
    ]:
        mask = RedactingFilter(url_secrets(url))
        assert mask.redact(f"Loaded JSON URL: {url}") == f"Loaded JSON URL: {url}".replace(
            token, "***"
        )
        assert token not in redact_url(url) and "127.0.0.1:9/hook" in redact_url(url)


# -- every hostile job reaches every service in a form it accepts ----------------------


def test_every_hostile_job_reaches_every_service_within_its_limits_pinging_no_one(
    tls_proxy: TLSInterceptProxy, smtp_server: SMTPCollector
) -> None:
    from alertd.models import Target
    from alertd.render import Item, Message, discord_embed_size, units
    from tests.hostile_jobs import HOSTILE_JOBS, SEARCHES

    urls = every_channel(smtp_server)
    for name, job in HOSTILE_JOBS.items():
        for message in (
            Message((Item(job, SEARCHES),)),
            Message(tuple(Item(job, SEARCHES) for _ in range(12)), more=5, heading="17 jobs"),
        ):
            for channel, url in urls.items():
                outcome = send(Target.for_url(url, channel), message, timeout=5)
                assert outcome.accepted, (name, channel, outcome)

    discord = tls_proxy.accepted(DISCORD_HOST)
    slack = tls_proxy.accepted(SLACK_HOST)
    telegram = tls_proxy.accepted(TELEGRAM_HOST)
    sent = 2 * len(HOSTILE_JOBS)
    assert len(discord) == len(slack) == len(telegram) == len(smtp_server.messages) == sent
    for request in discord:
        payload = request.json
        assert payload["allowed_mentions"] == {"parse": []}
        assert len(payload["embeds"]) <= 10 and discord_embed_size(payload) <= 6000
        assert units(payload.get("content", "")) <= 2000
        for text in strings_in(payload):
            assert "@everyone" not in text and "@here" not in text and "https://evil" not in text
    for request in slack:
        assert len(request.body) <= 40_000 * 4 and len(request.json["blocks"]) <= 50
        for text in strings_in(request.json):
            assert "<!" not in text and "<@" not in text, text[:200]
    for request in telegram:
        assert request.json["parse_mode"] == "HTML"
        text = request.json["text"]
        assert units(text) <= 4096
        assert "<" not in re.sub(r'</?[bi]>|</a>|<a href="https://[^"<>]*">', "", text), text
    for mail in smtp_server.messages:
        assert len(mail.message["Subject"]) <= 200
        page = mail.message.get_body(("html",)).get_content()
        assert "<script" not in page and "<b>" not in page and "https://evil" not in page


def test_a_refused_webhook_is_permanent_and_its_token_is_masked(
    tls_proxy: TLSInterceptProxy,
) -> None:
    from alertd.models import Target
    from alertd.render import Item, Message
    from tests.servers import Reply

    tls_proxy.set_reply(
        DISCORD_HOST, Reply.json(404, {"message": f"Unknown Webhook {DISCORD_TOKEN}"})
    )
    message = Message((Item(HOSTILE_JOB, ("s",)),))

    outcome = send(Target.for_url(DISCORD_URL, "discord"), message, timeout=5)

    assert not outcome.accepted and outcome.permanent and not outcome.unknown
    assert not outcome.refused_message  # every message is refused, not this one
    assert outcome.error is not None and "error=404" in outcome.error
    assert DISCORD_TOKEN not in outcome.error and DISCORD_ID not in outcome.error
    tls_proxy.down(SLACK_HOST, 500)
    slack = send(Target.for_url(SLACK_URL, "slack"), message, timeout=5)
    assert not slack.accepted and not slack.permanent and "error=500" in (slack.error or "")
    assert not slack.refused_message
    tls_proxy.set_reply(DISCORD_HOST, Reply.json(400, {"message": "Invalid Form Body"}))
    bad = send(Target.for_url(DISCORD_URL, "discord"), message, timeout=5)
    assert bad.refused_message and not bad.permanent  # this message; the next may go
    tls_proxy.down(TELEGRAM_HOST, 400)  # through apprise: its "error=400"
    telegram = send(Target.for_url(TELEGRAM_URL, "telegram"), message, timeout=5)
    assert telegram.refused_message and not telegram.permanent


def test_a_webhook_that_answers_too_late_may_have_the_message(
    tls_proxy: TLSInterceptProxy,
) -> None:
    import time

    from alertd.models import Target
    from alertd.render import Item, Message
    from tests.conftest import wait_for
    from tests.servers import Reply

    def slow(request: object) -> Reply:
        time.sleep(1.5)
        return Reply(204)

    tls_proxy.set_reply(DISCORD_HOST, slow)

    outcome = send(Target.for_url(DISCORD_URL, "discord"), Message((Item(HOSTILE_JOB, ()),)), 1.0)

    assert not outcome.accepted and outcome.unknown, outcome
    wait_for(lambda: len(tls_proxy.requests(DISCORD_HOST)) == 1)  # it did go out


@pytest.mark.parametrize(
    ("channel", "host", "asked"),
    [
        # Discord says how long in its body (``retry_after``), any other webhook in the header
        ("discord", DISCORD_HOST, ((), {"message": "rate limited", "retry_after": 120.5})),
        ("slack", SLACK_HOST, ((("Retry-After", "120.5"),), "rate_limited")),
    ],
)
def test_a_429_is_retried_after_what_the_service_asked_not_sooner(
    tls_proxy: TLSInterceptProxy,
    market: Market,
    state_dir: Path,
    write_config: WriteConfig,
    run_cli: RunCli,
    channel: str,
    host: str,
    asked: tuple[tuple[tuple[str, str], ...], Any],
) -> None:
    from tests.servers import Reply

    url = {"discord": DISCORD_URL, "slack": SLACK_URL}[channel]
    config = channels_config(write_config, {channel: url}, "retry_schedule: [1s]")
    prime_and_publish(run_cli, market, config, title="Rate limited")
    headers, body = asked
    tls_proxy.set_reply(host, Reply(429, json.dumps(body).encode(), headers))
    before = utc_now()
    limited = run_cli("once", "-c", config)
    assert limited.exit_code == 1
    assert "rate limiting: asked to wait 120.5s" in limited.output
    with Store.open(state_dir) as store:
        (row,) = store.owed_rows()
    waits = (row.next_attempt_at - before).total_seconds()
    assert 119 <= waits <= 130  # the service's 120.5 s, not the schedule's 1 s
