"""Jobs written to ping, format, script, phish and overflow in every channel alertd serves.

Each entry is a ``Job`` as alertd could hold it: parsed from the API, or read back from
a store that an older or hand-edited version wrote (``Job.from_record`` does not check
types, so nulls and numbers appear where strings are expected).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from alertd.models import Job

MENTIONS = "@everyone @here <@123456> <@!123456> <@&987654> <!channel> <!here> <!everyone>"
SLACK_MARKUP = "<https://evil.example|click me> <!subteam^S123|team> *bold* _it_ ~st~ `code`"
DISCORD_MARKUP = "# header\n> quote ||spoiler|| **b** __u__ ~~s~~ ```code``` <t:0:R> <:e:1>"
MASKED = "[click here](https://evil.example/login) [x](<https://evil.example>)"
HTML = '<b>bold</b> <script>alert(1)</script> <a href="https://evil.example">a</a> &amp; &lt;'
BIDI = "Nice\u202ejob\u2066 gpj.exe\u200b\u200c\u2060\ufeff\u00ad"
EMOJI = "🎧 Audio 👨‍👩‍👧 family 🇩🇪"
HUGE = "Ω🎧 " * 16_667  # 50,000 characters, two UTF-16 units in every three


def _job(**fields: Any) -> Job:
    base: dict[str, Any] = {
        "id": "hostile-1",
        "url": "https://app.opentrain.ai/jobs/hostile-1",
        "category": "Audio Annotation",
        "languages": ["German"],
        "date_posted": "2026-06-12T08:00:00.000Z",
        "pay": {"payment_type": "PAY_PER_HOUR", "currency": "USD", "hourly_min": 20.0},
    }
    return Job.from_record({**base, **fields})


HOSTILE_JOBS: dict[str, Job] = {
    "mentions": _job(title=MENTIONS, company=MENTIONS, summary=MENTIONS, category=MENTIONS),
    "slack markup": _job(title=SLACK_MARKUP, company=SLACK_MARKUP, summary=SLACK_MARKUP),
    "discord markup": _job(title=DISCORD_MARKUP, summary=DISCORD_MARKUP * 3),
    "masked links": _job(title=MASKED, company=MASKED, summary=MASKED + " https://evil.example"),
    "html": _job(title=HTML, company=HTML, summary=HTML, category=HTML),
    "bidi and invisible": _job(title=BIDI, company=BIDI, summary=BIDI),
    "entities": _job(title="&<>\"'" * 200, company="&" * 5000, summary="&<>\"'" * 20_000),
    "emoji": _job(title=EMOJI * 40, summary=EMOJI * 2000),
    "50k everywhere": _job(
        title=HUGE,
        company=HUGE,
        summary=HUGE,
        category=HUGE,
        languages=[HUGE] * 30,
        url="https://example.com/" + "a" * 50_000,
        pay={"payment_type": "FIXED_PRICE", "currency": "X" * 1000, "fixed_price": 1e12},
    ),
    "wrong types": _job(
        title=None,
        company=12345,
        summary=["not", "a", "string"],
        category={"a": 1},
        languages="German",
        url=42,
        date_posted=17,
        pay={"payment_type": 5, "currency": 7, "hourly_min": "lots", "fixed_price": None},
    ),
    "nulls": Job(id="null-1", title="", company=None, url=None, summary=None, pay=None),
}

# Searches named by a config author, but long and odd enough to test the footer limits.
SEARCHES = tuple(f"search-{i} @everyone <!here> " + "n" * 100 for i in range(30))

POSTED = datetime(2026, 6, 12, 8, 0, tzinfo=UTC)
