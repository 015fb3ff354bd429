"""The community page's routes: each parses, calls one function, renders one template.

Who may do what is decided elsewhere (``rules``, ``alertd.members``); here is only
HTTP: CSRF on every form (flask-wtf; the one-click unsubscribe alone is exempt, being
authenticated by its token), the rate limits, and the security headers on every answer.
A GET never changes anything: mail scanners follow links, so confirming and
unsubscribing are buttons.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, g, request
from flask_wtf.csrf import CSRFError, CSRFProtect

from alertd.community import manage, signup
from alertd.community.page import HOUR, DaemonStatus, Page, notice
from alertd.community.rules import client_key

__all__ = ["DaemonStatus", "Page", "create_app"]

MAX_BODY = 16 * 1024  # bytes of one form: every field is bounded far below this
CSP = (
    "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; "
    "object-src 'none'"
)
PUBLIC_PATHS = ("/", "/status", "/lost", "/static/")  # the rest is personal: noindex


def create_app(page: Page) -> Flask:
    """The community page's Flask app (served by ``serve.serve_community``)."""
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=page.members.derive_key("flask-session"),
        MAX_CONTENT_LENGTH=MAX_BODY,
        MAX_FORM_PARTS=100,
        SESSION_COOKIE_NAME="alertd_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=page.spec.public_url.startswith("https://"),
        WTF_CSRF_TIME_LIMIT=6 * HOUR,
        WTF_CSRF_SSL_STRICT=False,  # behind a proxy the Referer check sees our own URL only
    )
    csrf = CSRFProtect(app)
    app.extensions["alertd_members"] = page.members
    app.extensions["alertd_community"] = page.spec

    @app.before_request
    def _bind() -> None:
        g.page = page
        # the member's, from a proxy on 127.0.0.1 (serve.py); an IPv6 one's /64
        g.ip = client_key(request.remote_addr or "?")

    app.after_request(_secure)
    app.register_error_handler(CSRFError, _csrf_failed)
    for code in (400, 404, 405, 413, 429):
        app.register_error_handler(code, _http_error)
    _routes(app, csrf)
    _feeds(app, page)
    return app


def _feeds(app: Flask, page: Page) -> None:
    """The Atom feeds (``alertd.community.feeds``: ``/feed/<token>.atom``), when a feeds
    store is given: a member's feed token names the feed ``member:<id>``."""
    if page.feeds is None:
        return
    from alertd.community import feeds  # type: ignore[attr-defined,unused-ignore]

    members = page.members

    def resolve(token: str) -> str | None:
        member = members.member_for_feed(token)
        return None if member is None else f"member:{member.id}"

    def public(slug: str) -> str | None:
        return page.public_feeds(slug)  # as the config now is (a reload may change it)

    app.config.update(
        ALERTD_FEEDS=page.feeds,
        ALERTD_FEED_RESOLVER=resolve,
        ALERTD_PUBLIC_FEEDS=public,
        ALERTD_PUBLIC_URL=page.spec.public_url,
    )
    app.register_blueprint(feeds.blueprint)


def _secure(response: Response) -> Response:
    headers = response.headers
    headers["Content-Security-Policy"] = CSP
    headers["X-Frame-Options"] = "DENY"
    headers["Referrer-Policy"] = "no-referrer"  # tokens live in URLs
    headers["X-Content-Type-Options"] = "nosniff"
    headers["Cross-Origin-Opener-Policy"] = "same-origin"
    path = request.path
    if not (path in PUBLIC_PATHS or path.startswith("/static/")):
        headers.setdefault("X-Robots-Tag", "noindex, nofollow")
        headers.setdefault("Cache-Control", "no-store")  # a feed's own caching stays
    return response


def _csrf_failed(exc: CSRFError) -> tuple[str, int]:
    return notice("This form has expired", "Go back, reload the page and try again.", 400)


def _http_error(exc: Any) -> tuple[str, int]:
    code = int(getattr(exc, "code", 400) or 400)
    titles = {
        404: "This link is not valid",
        405: "Not here",
        413: "Too much",
        429: "Too many tries",
    }
    text = {
        404: "It may have expired, been used, or been replaced by a newer one.",
        429: "Please wait a while before trying again.",
    }
    return notice(titles.get(code, "Not understood"), text.get(code, ""), code)


def _routes(app: Flask, csrf: CSRFProtect) -> None:
    app.add_url_rule("/", "signup_form", signup.signup_form)
    app.add_url_rule("/signup", "signup", signup.signup, methods=["POST"])
    app.add_url_rule("/c/<token>", "confirm", signup.confirm, methods=["GET", "POST"])
    app.add_url_rule("/m/<token>", "manage", manage.manage)
    app.add_url_rule("/m/<token>/add", "add", manage.add, methods=["POST"])
    app.add_url_rule("/m/<token>/s/<sid>", "edit", manage.edit, methods=["GET", "POST"])
    app.add_url_rule("/m/<token>/s/<sid>/<action>", "act", manage.act, methods=["POST"])
    app.add_url_rule("/m/<token>/delete", "delete_all", manage.delete_all, methods=["POST"])
    app.add_url_rule("/m/<token>/new-link", "new_link", manage.new_link, methods=["POST"])
    app.add_url_rule("/m/<token>/export", "export", manage.export)
    app.add_url_rule("/m/<token>/telegram", "telegram", manage.telegram, methods=["POST"])
    app.add_url_rule("/lost", "lost", signup.lost, methods=["GET", "POST"])
    app.add_url_rule(
        "/u/<token>", "unsubscribe", csrf.exempt(signup.unsubscribe), methods=["GET", "POST"]
    )
    app.add_url_rule("/status", "status", signup.status)
