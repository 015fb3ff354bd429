"""Discord role pings the operator chooses (``mention_roles:``), and nothing else pings.

The alerts go the way a user's do: ``alertd once`` with a real ``discord://`` URL, to
Discord as a TLS-intercepting proxy on 127.0.0.1 plays it. What is asserted is what
members would notice: who Discord would notify for the JSON it received, worked out by
``pinged`` from Discord's documented rules, not from alertd's code.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest

from alertd.config import load_config
from alertd.market import Market
from alertd.models import Job
from alertd.render import Item, Message, render_discord
from tests.conftest import RunCli, WriteConfig
from tests.servers import DISCORD_HOST, TLSInterceptProxy
from tests.world import strings_in

HOOK = "discord://4174216298/JHMHI8qBe7bk2ZwO5U711o3dV_js"
OTHER_HOOK = "discord://4174216299/KHMHI8qBe7bk2ZwO5U711o3dV_js"
SPANISH = "123456789012345678"  # the role members pick for the topic
REVIEWERS = "12345678901234567890"  # 20 digits (the longest a snowflake is written), < 2**64
STRANGER_ROLE = "111111111111111111"
STRANGER_USER = "222222222222222222"

# A poster's job that tries every way to ping: another role, a user, everyone, here,
# and even the very role the operator pings.
HOSTILE = {
    "title": f"<@&{STRANGER_ROLE}> @everyone urgent <@&{SPANISH}>",
    "companyName": "@here",
    "summary": f"<@{STRANGER_USER}> <@!{STRANGER_USER}> @everyone <@&{STRANGER_ROLE}>",
}


def pinged(payload: dict[str, Any]) -> set[str]:
    """Who Discord notifies for an Execute Webhook payload: mentions in ``content`` only
    (embeds never ping; a backslash-escaped mention is text), kept where
    ``allowed_mentions`` allows them (absent: every mention pings)."""
    content = str(payload.get("content", ""))
    found = {f"role:{i}" for i in re.findall(r"(?<!\\)<@&(\d+)>", content)}
    found |= {f"user:{i}" for i in re.findall(r"(?<!\\)<@!?(\d+)>", content)}
    found |= {f"everyone:{w}" for w in re.findall(r"(?<!\\)@(everyone|here)\b", content)}
    allowed = payload.get("allowed_mentions")
    if allowed is None:
        return found
    parse, roles, users = (list(allowed.get(k, [])) for k in ("parse", "roles", "users"))
    # Discord refuses (400) a type both parsed and listed: such a payload pings no one.
    assert not ("roles" in parse and roles) and not ("users" in parse and users), allowed
    assert len(roles) <= 100 and len(users) <= 100, allowed
    return {
        m
        for m in found
        if (m.startswith("role:") and ("roles" in parse or m[5:] in roles))
        or (m.startswith("user:") and ("users" in parse or m[5:] in users))
        or (m.startswith("everyone:") and "everyone" in parse)
    }


@pytest.fixture
def discord(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[TLSInterceptProxy]:
    """Discord (and the other services) on 127.0.0.1, reached through ``HTTPS_PROXY``
    with a throwaway CA trusted, as apprise and httpx reach the real one."""
    with TLSInterceptProxy() as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(proxy.write_ca(tmp_path / "ca.pem")))
        yield proxy
    assert proxy.refused == [] and proxy.errors == [], (proxy.refused, proxy.errors)


def topic_config(write_config: WriteConfig, roles: str = f'["{SPANISH}", {REVIEWERS}]') -> Path:
    """A community's topic channel that pings its roles, and a plain channel beside it."""
    return write_config(
        f"""
        channels:
          spanish-audio:
            url: {HOOK}
            mention_roles: {roles}
          quiet: {OTHER_HOOK}
        searches:
          - name: spanish
            notify: [spanish-audio, quiet]
        """
    )


def sent_to(proxy: TLSInterceptProxy, hook: str) -> list[dict[str, Any]]:
    """The JSON payloads Discord accepted on ``hook``'s webhook, oldest first."""
    path = "/api/webhooks/" + hook.removeprefix("discord://")
    return [r.json for r in proxy.accepted(DISCORD_HOST) if r.path == path]


def test_a_topic_channel_pings_its_roles_and_job_text_pings_no_one(
    discord: TLSInterceptProxy, market: Market, write_config: WriteConfig, run_cli: RunCli
) -> None:
    config = topic_config(write_config)
    assert run_cli("once", "-c", config).exit_code == 0  # primes: nothing sent
    market.add_job(**HOSTILE)

    result = run_cli("once", "-c", config)

    assert result.exit_code == 0, result.output
    [payload] = sent_to(discord, HOOK)
    assert payload["content"] == f"<@&{SPANISH}> <@&{REVIEWERS}>"
    assert payload["allowed_mentions"] == {"parse": [], "roles": [SPANISH, REVIEWERS]}
    assert pinged(payload) == {f"role:{SPANISH}", f"role:{REVIEWERS}"}
    # The poster's words are there to read, but none of them is a mention anywhere.
    assert "urgent" in payload["embeds"][0]["title"]
    for text in strings_in(payload["embeds"]):
        assert not re.search(r"<@[!&]?\d+>|@everyone|@here", text), text
    [plain] = sent_to(discord, OTHER_HOOK)  # a channel without roles still pings no one
    assert plain["allowed_mentions"] == {"parse": []} and "content" not in plain
    assert pinged(plain) == set()


def test_a_burst_summary_pings_the_roles_once_above_its_heading(
    discord: TLSInterceptProxy, market: Market, write_config: WriteConfig, run_cli: RunCli
) -> None:
    config = topic_config(write_config, roles=SPANISH)  # one ID, as a bare number
    assert run_cli("once", "-c", config).exit_code == 0
    for n in range(25):  # more than a cycle sends one by one: one summary message
        market.add_job(**{**HOSTILE, "title": f"{HOSTILE['title']} #{n}"})

    result = run_cli("once", "-c", config)

    assert result.exit_code == 0, result.output
    [payload] = sent_to(discord, HOOK)
    first, *rest = payload["content"].split("\n")
    assert first == f"<@&{SPANISH}>" and "25" in rest[0], payload["content"]
    assert payload["allowed_mentions"] == {"parse": [], "roles": [SPANISH]}
    assert pinged(payload) == {f"role:{SPANISH}"}
    assert len(payload["content"]) <= 2000


def test_test_notify_shows_the_roles_but_pings_no_one(
    discord: TLSInterceptProxy, write_config: WriteConfig, run_cli: RunCli
) -> None:
    result = run_cli("test-notify", "-c", topic_config(write_config), "spanish-audio")

    assert result.exit_code == 0, result.output
    assert "ok      spanish-audio: accepted (its roles shown, not pinged)" in result.output
    [payload] = sent_to(discord, HOOK)
    assert payload["content"] == f"<@&{SPANISH}> <@&{REVIEWERS}>"
    assert pinged(payload) == set()


def test_twenty_roles_and_ten_jobs_fit_one_discord_message() -> None:
    roles = [str(10**19 + n) for n in range(20)]  # the most a channel may name, longest IDs
    job = Job(id="j", title="<@&1> " * 100, company="@everyone " * 50)
    message = Message(tuple(Item(job, ("s",)) for _ in range(12)), more=40, heading="x" * 500)

    payload = render_discord(message, UTC, roles)

    assert len(payload["content"]) <= 2000 and len(payload["embeds"]) == 10
    assert pinged(payload) == {f"role:{r}" for r in roles}


def test_validate_names_the_channels_that_ping(write_config: WriteConfig, run_cli: RunCli) -> None:
    result = run_cli("validate", "-c", topic_config(write_config))

    assert result.exit_code == 0, result.output
    assert f"Discord role pings: spanish-audio → {SPANISH}, {REVIEWERS}\n" in result.output


def test_in_a_list_only_the_discord_url_pings(write_config: WriteConfig) -> None:
    config = write_config(
        f"""
        channels:
          everywhere:
            urls: [{HOOK}, "slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ"]
            mention_roles: [{SPANISH}, {SPANISH}]
        searches:
          - name: a
            notify: everywhere
        """
    )
    discord_target, slack_target = load_config(config).channels["everywhere"]
    assert discord_target.mention_roles == (SPANISH,)  # named twice, pinged once
    assert slack_target.mention_roles == ()


@pytest.mark.parametrize(
    ("roles", "line", "expected"),
    [
        ('["@spanish-audio"]', 4, "mention_roles[0]: '@spanish-audio' is a mention or a name"),
        (f'["<@&{SPANISH}>"]', 4, f"mention_roles[0]: '<@&{SPANISH}>' is a mention or a name"),
        (f"\n      - {SPANISH}\n      - 12345", 6, "mention_roles[1]: '12345' is not a Discord"),
        ("[123456789012345678901]", 4, "is not a Discord role ID (17 to 20 digits)"),
        ("[0123456789012345678]", 4, "is not a Discord role ID"),
        ('["1234567890123456"]', 4, "'1234567890123456' is not a Discord role ID"),
        ("[true]", 4, "mention_roles[0]: a role ID is a number of 17 to 20 digits"),
        ("{id: 1}", 4, "mention_roles: write the role IDs as a list"),
        (str([str(10**18 + n) for n in range(21)]), 4, "21 roles; a channel pings at most 20"),
    ],
)
def test_a_role_that_is_not_an_id_is_one_line_naming_file_line_and_field(
    tmp_path: Path, run_cli: RunCli, roles: str, line: int, expected: str
) -> None:
    config = tmp_path / "alerts.yaml"
    config.write_text(
        f"channels:\n  es:\n    url: {HOOK}\n    mention_roles: {roles}\n"
        "searches:\n  - name: a\n    notify: es\n"
    )

    result = run_cli("validate", "-c", config)

    assert result.exit_code == 2, result.output
    [error] = result.output.strip().splitlines()
    assert error.startswith(f"Error: {config}:{line}: channels.es.mention_roles"), error
    assert expected in error


@pytest.mark.parametrize(
    ("channels", "expected"),
    [
        (
            f"  es:\n    url: json://127.0.0.1:9/hook\n    mention_roles: [{SPANISH}]\n",
            ":4: channels.es.mention_roles: only a Discord channel can ping roles",
        ),
        (
            f"  es:\n    url: {HOOK}\n    mention_roles: [{SPANISH}]\n"
            f"  es-again:\n    url: {HOOK}\n",
            ":6: channels.es-again.url: the same URL as channel 'es' with another mention_roles",
        ),
    ],
)
def test_roles_that_would_go_nowhere_or_disagree_are_refused(
    tmp_path: Path, run_cli: RunCli, channels: str, expected: str
) -> None:
    config = tmp_path / "alerts.yaml"
    config.write_text("channels:\n" + channels + "searches:\n  - name: a\n    notify: es\n")

    result = run_cli("validate", "-c", config)

    assert result.exit_code == 2, result.output
    [error] = result.output.strip().splitlines()
    assert error.startswith(f"Error: {config}{expected}"), error


def test_the_example_shows_the_key_and_uncommented_it_validates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_cli: RunCli
) -> None:
    shown = run_cli("init", "-").output
    assert "#   mention_roles:" in shown
    example = re.sub(r"(?m)^  # (spanish-audio:|  url: discord|  mention_roles)", r"  \1", shown)
    assert "\n  spanish-audio:" in example
    config = tmp_path / "alerts.yaml"
    config.write_text(example)
    monkeypatch.setenv("SLACK_WEBHOOK", "T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ")
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "123456789:ABCdefGhIJKlmnOPqrSTUvwxYZ")
    monkeypatch.setenv("SMTP_PASSWORD", "placeholder-value")
    monkeypatch.setenv("DISCORD_WEBHOOK", "4174216298/JHMHI8qBe7bk2ZwO5U711o3dV_js")
    monkeypatch.setenv("DISCORD_SPANISH_AUDIO_WEBHOOK", "4174216297/LHMHI8qBe7bk2ZwO5U711o3dV_js")

    result = run_cli("validate", "-c", config)

    assert result.exit_code == 0, result.output
    assert f"Discord role pings: spanish-audio → {SPANISH}" in result.output


def test_a_role_from_the_environment_is_needed_only_to_send(
    write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = topic_config(write_config, roles='["${SPANISH_ROLE}"]')
    # `alertd status` and `health` read the config where the daemon's variables are not
    assert load_config(config, need_secrets=False).channels["spanish-audio"]
    monkeypatch.setenv("SPANISH_ROLE", SPANISH)
    [target] = load_config(config).channels["spanish-audio"]
    assert target.mention_roles == (SPANISH,)
