"""``GET /feed/<token>.atom`` (a member's personal feed) and ``GET /feeds/<slug>.atom``
(the public feed of an operator search with ``feed: true``).

The app provides the decisions as callables on its config, so these routes stay thin:

- ``ALERTD_FEEDS``: the ``alertd.feeds.Feeds`` store;
- ``ALERTD_FEED_RESOLVER``: token → feed key (or ``FeedRef``), None when the token is
  not a live one;
- ``ALERTD_PUBLIC_FEEDS``: slug → feed key (or ``FeedRef``), None for a search that
  did not opt in (``alertd.feeds.public_feeds`` builds one);
- ``ALERTD_PUBLIC_URL`` (optional): the page's public address, for the feed's self link
  behind a reverse proxy.

An unknown, revoked or malformed token is one plain 404, whatever the reason: the answer
never tells a guesser that a token once existed. Feed readers poll, so every answer has
an ``ETag`` (a digest of the exact bytes) and a ``Last-Modified``, and a repeat is a 304.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from flask import Blueprint, Response, current_app, request
from werkzeug.http import is_resource_modified

from alertd import __version__
from alertd.atom import ATOM_TYPE, feed_id_for, render_atom
from alertd.feeds import FeedRef, Feeds

blueprint = Blueprint("feeds", __name__)

MAX_TOKEN = 200  # characters: far past any token alertd makes, short of a flood
PERSONAL_HEADERS = {
    "Cache-Control": "private, no-cache",
    "X-Robots-Tag": "noindex",
    "Referrer-Policy": "no-referrer",  # the token is in the URL
}
PUBLIC_HEADERS = {"Cache-Control": "public, max-age=300"}

Resolver = Callable[[str], "str | FeedRef | None"]


@blueprint.get("/feed/<token>.atom")
def personal_feed(token: str) -> Response:
    """A member's own feed, found by the secret token in its URL."""
    ref = _resolve("ALERTD_FEED_RESOLVER", token)
    if ref is None:
        return _not_found(PERSONAL_HEADERS)
    return _feed_answer(ref, PERSONAL_HEADERS)


@blueprint.get("/feeds/<slug>.atom")
def public_feed(slug: str) -> Response:
    """The public feed of an operator search that opted in."""
    ref = _resolve("ALERTD_PUBLIC_FEEDS", slug)
    if ref is None:  # not cached: a search that opts in is there at once
        return _not_found({})
    return _feed_answer(ref, PUBLIC_HEADERS)


def _resolve(resolver_key: str, name: str) -> FeedRef | None:
    """The feed a URL names, or None; a name no resolver would accept is not asked."""
    resolver: Resolver | None = current_app.config.get(resolver_key)
    if resolver is None or not 0 < len(name) <= MAX_TOKEN or not name.isascii():
        return None
    found = resolver(name)
    if isinstance(found, str):
        return FeedRef(key=found)
    return found


def _feed_answer(ref: FeedRef, headers: dict[str, str]) -> Response:
    """The feed, or a 304 when the reader has it. A repeat with the ETag is answered from
    the file's version without reading the file; one with only If-Modified-Since without
    rendering it (a 200-entry feed renders in ~18 ms)."""
    feeds: Feeds = current_app.config["ALERTD_FEEDS"]
    self_url, alternate = _self_url(), ref.alternate_url or _page_url()
    # The version is read before the entries: a change in between costs the reader one
    # more download, never a 304 for a feed it does not have.
    etag = _etag(ref, feeds.version(ref.key), self_url, alternate)
    if request.if_none_match.contains(etag):
        return _not_modified(etag, headers)
    entries, changed = feeds.entries(ref.key)
    # A reader sending only If-Modified-Since is answered before the render too.
    if not is_resource_modified(request.environ, etag=etag, last_modified=changed):
        return _not_modified(etag, headers)
    body = render_atom(
        ref.title, feed_id_for(ref.key), self_url, entries, changed, alternate_url=alternate
    )
    response = Response(body, content_type=f"{ATOM_TYPE}; charset=utf-8", headers=headers)
    response.set_etag(etag)
    if changed is not None:
        response.last_modified = changed
    return response


def _etag(ref: FeedRef, version: str, self_url: str, alternate: str) -> str:
    """Names the exact document: the feed file's version and everything else rendered
    into it (a renamed community, another public URL, another alertd)."""
    parts = (__version__, ref.key, ref.title, version, self_url, alternate)
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


def _not_modified(etag: str, headers: dict[str, str]) -> Response:
    response = Response(status=304, headers=headers)
    response.set_etag(etag)
    return response


def _not_found(headers: dict[str, str]) -> Response:
    return Response("Not found\n", status=404, mimetype="text/plain", headers=headers)


def _page_url() -> str:
    base = current_app.config.get("ALERTD_PUBLIC_URL")
    return f"{base.rstrip('/')}/" if base else request.url_root


def _self_url() -> str:
    base = current_app.config.get("ALERTD_PUBLIC_URL")
    return f"{base.rstrip('/')}{request.path}" if base else request.base_url
