"""A feed's entries as an Atom 1.0 document (RFC 4287): pure, no I/O.

ElementTree writes the document, so every ``<``, ``&`` and ``]]>`` a job poster wrote is
escaped by the library, not by us. What no escaping can carry is stripped first: XML
1.0 has no way to write most control characters, U+FFFE/U+FFFF or a lone surrogate, and
one of them makes the whole feed unreadable. Entry text was cleaned and bounded when it
was added (``alertd.feeds.entry_of``); it is bounded again here because a feed file is
read back from disk.
"""

from __future__ import annotations

import re
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from datetime import UTC, datetime

from alertd.feeds import FeedEntry
from alertd.render import canonical_link, safe_link

ATOM_NS = "http://www.w3.org/2005/Atom"
ATOM_TYPE = "application/atom+xml"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# What XML 1.0 cannot hold at all (its ``Char`` production, inverted).
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
NEW_JOB = "New OpenTrain job"


def xml_text(value: object, limit: int) -> str:
    """Text XML can carry, at most ``limit`` characters (cut with an ellipsis).

    Characters, not ``render.fit``'s UTF-16 units: no reader limits a feed in units,
    and counting them a character at a time made a 200-entry feed take 180 ms."""
    text = _NOT_XML.sub("", value[: limit * 2] if isinstance(value, str) else "")
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def atom_time(moment: datetime) -> str:
    """An RFC 3339 UTC date-time, as Atom requires: ``2026-12-02T09:50:46Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def entry_id(feed_id: str, job_id: str) -> str:
    """An entry's Atom id: the same for a job in a feed whatever changes (a raise is an
    update of the entry), different in another feed (which may say other things)."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"{feed_id}#job={job_id}").urn


def feed_id_for(feed_key: str) -> str:
    """A feed's Atom id from its key: stable when its token or the public URL change."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"alertd-feed:{feed_key}").urn


def render_atom(
    feed_title: str,
    feed_id_url: str,
    self_url: str,
    entries: Sequence[FeedEntry],
    updated: datetime | None,
    *,
    alternate_url: str | None = None,
    author: str = "alertd",
) -> bytes:
    """The Atom document for a feed, UTF-8. ``feed_id_url`` is the feed's Atom id (an IRI
    that never changes), ``self_url`` where it is read, ``alternate_url`` the page it
    belongs to (a member's manage page); ``updated`` None means never (an empty feed)."""
    feed = ET.Element("feed", xmlns=ATOM_NS)
    _text(feed, "id", feed_id_url)
    _text(feed, "title", xml_text(feed_title, 200) or "OpenTrain jobs")
    _text(feed, "updated", atom_time(updated or EPOCH))
    ET.SubElement(ET.SubElement(feed, "author"), "name").text = xml_text(author, 100) or "alertd"
    ET.SubElement(feed, "link", rel="self", type=ATOM_TYPE, href=xml_text(self_url, 2000))
    if alternate_url:
        ET.SubElement(
            feed, "link", rel="alternate", type="text/html", href=xml_text(alternate_url, 2000)
        )
    _text(feed, "generator", "alertd")
    for entry in entries:
        feed.append(_entry(entry, feed_id_url))
    return bytes(ET.tostring(feed, encoding="utf-8", xml_declaration=True))


def _text(parent: ET.Element, tag: str, text: str) -> ET.Element:
    element = ET.SubElement(parent, tag)
    element.text = text
    return element


def _entry(entry: FeedEntry, feed_id: str) -> ET.Element:
    element = ET.Element("entry")
    title = xml_text(entry.title, 300) or "(untitled job)"
    headline = xml_text(entry.headline, 60)
    _text(element, "id", entry_id(feed_id, entry.job_id))
    _text(element, "title", title if headline in ("", NEW_JOB) else f"{headline}: {title}")
    _text(element, "updated", atom_time(entry.updated))
    _text(element, "published", atom_time(entry.published))
    link = safe_link(entry.url) or canonical_link(entry.job_id)
    ET.SubElement(element, "link", rel="alternate", type="text/html", href=xml_text(link, 2000))
    _text(element, "summary", summary_text(entry)).set("type", "text")
    return element


def summary_text(entry: FeedEntry) -> str:
    """An entry's summary as plain text: the facts an alert message gives, then the job's
    own summary, then which searches matched."""
    facts = [
        f"{name}: {xml_text(value, 200)}"
        for name, value in (
            ("Pay", entry.pay),
            ("Category", entry.category),
            ("Languages", entry.languages),
        )
        if value
    ]
    lines = [xml_text(entry.company, 120), " | ".join(facts), xml_text(entry.summary, 2000)]
    lines.append(f"Matched: {xml_text(entry.search_title, 500)}")
    return "\n\n".join(line for line in lines if line)
