"""The community page's routes: each parses, calls one function, renders one template.

Who may do what is decided elsewhere (``rules``, ``alertd.members``); here is only
HTTP: CSRF on every form (flask-wtf; the one-click unsubscribe alone is exempt, being
authenticated by its token), the rate limits, and the security headers on every answer.
A GET never changes anything: mail scanners follow links, so confirming and
unsubscribing are buttons.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from flask import Flask, Response, abort, g, redirect, render_template, request, url_for
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.wrappers import Response as BaseResponse

from alertd.community.config import CommunitySpec
from alertd.community.lookup import Count, Lookup
from alertd.community.mail import confirmation_text, manage_text
from alertd.community.postman import Postman
from alertd.community.rules import (
    Facets,
    FormError,
    RateLimiter,
    address_key,
    clean_email,
    clean_text,
    may_sign_up,
    parse_search,
)
from alertd.members import LimitError, Member, Members, SearchDraft, TokenError, as_draft
from alertd.models import PAY_TYPES

log = logging.getLogger(__name__)

HOUR = 3600.0
DAY = 24 * HOUR
MAX_BODY = 16 * 1024  # bytes of one form: every field is bounded far below this
CSP = (
    "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; "
    "object-src 'none'"
)
PUBLIC_PATHS = ("/", "/status", "/lost", "/static/")  # the rest is personal: noindex
ONE_CLICK = "List-Unsubscribe=One-Click"


@dataclass(frozen=True)
class DaemonStatus:
    """What the public status page may say of the daemon: no addresses, no secrets."""

    last_cycle_ended: datetime | None = None
    api_answers: bool | None = None


@dataclass
class Limits:
    """The page's rate limits (``alertd.community.rules.RateLimiter``), per kind."""

    signup_per_ip: RateLimiter = field(default_factory=lambda: RateLimiter(10, HOUR))
    lost_per_ip: RateLimiter = field(default_factory=lambda: RateLimiter(10, HOUR))
    count_per_ip: RateLimiter = field(default_factory=lambda: RateLimiter(60, HOUR))
    mail_per_address: RateLimiter = field(default_factory=lambda: RateLimiter(3, DAY))
    mail_total: RateLimiter = field(default_factory=lambda: RateLimiter(300, HOUR))


@dataclass
class Page:
    """What the routes share: the config, the table, the API view, the mail thread."""

    spec: CommunitySpec
    members: Members
    lookup: Lookup | None
    postman: Postman
    status: Callable[[], DaemonStatus]
    tz_name: str = "UTC"
    limits: Limits = field(default_factory=Limits)

    def facets(self) -> Facets:
        """The form's choices (none when the page has no API view)."""
        return Facets() if self.lookup is None else self.lookup.facets()

    def count(self, draft: SearchDraft, ip: str) -> Count | None:
        """How many jobs match now, within the budget and the per-IP limit."""
        if self.lookup is None or not self.limits.count_per_ip.allow(ip):
            return None
        return self.lookup.count(draft)

    def mail(self, to: str, subject: str, body: str) -> bool:
        """Queue a mail unless the address (or the page) had its share today."""
        if not self.limits.mail_per_address.allow(address_key(to)):
            return False
        if not self.limits.mail_total.allow("all"):
            log.warning("community: the page's mails for this hour are spent; one was not sent")
            return False
        self.postman.post(to, subject, body)
        return True

    def link(self, path: str) -> str:
        """``path`` on the page as members reach it (``public_url``)."""
        return f"{self.spec.public_url}{path}"


def _page() -> Page:
    page: Page = g.page
    return page


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
        g.ip = request.remote_addr or "?"  # the member's, from a proxy on 127.0.0.1 (serve.py)

    app.after_request(_secure)
    app.register_error_handler(CSRFError, _csrf_failed)
    for code in (400, 404, 405, 413, 429):
        app.register_error_handler(code, _http_error)
    _routes(app, csrf)
    _feeds(app)
    return app


def _feeds(app: Flask) -> None:
    """The personal Atom feeds, when that module is there (``alertd.community.feeds``)."""
    try:
        from alertd.community import feeds  # type: ignore[attr-defined,unused-ignore]
    except ImportError:
        return
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
        headers["X-Robots-Tag"] = "noindex, nofollow"
        headers["Cache-Control"] = "no-store"
    return response


def _csrf_failed(exc: CSRFError) -> tuple[str, int]:
    return _notice("This form has expired", "Go back, reload the page and try again.", 400)


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
    return _notice(titles.get(code, "Not understood"), text.get(code, ""), code)


def _notice(title: str, text: str, status: int = 200, **extra: Any) -> tuple[str, int]:
    return render_template("notice.html", title=title, text=text, **extra), status


def _form_context(page: Page, values: dict[str, str], error: FormError | None) -> dict[str, Any]:
    return {
        "spec": page.spec,
        "facets": page.facets(),
        "pay_types": PAY_TYPES,
        "values": values,
        "error": error,
        "tz_name": page.tz_name,
    }


def _form_values() -> dict[str, str]:
    return {k: v for k, v in request.form.items() if isinstance(v, str)}


def _draft_values(draft: SearchDraft) -> dict[str, str]:
    pay = draft.filters.min_pay
    amount = None if pay is None else (pay.hourly or pay.fixed or pay.per_label)
    return {
        "title": draft.title,
        "q": draft.q or "",
        "category": draft.category or "",
        "language": draft.language or "",
        "country": draft.country or "",
        "pay_type": draft.pay_type or "",
        "min_pay": "" if amount is None else f"{amount:g}",
        "exclude": ", ".join(draft.filters.exclude),
        "pace": draft.pace,
        "digest_hour": "" if draft.digest_hour is None else str(draft.digest_hour),
    }


def _routes(app: Flask, csrf: CSRFProtect) -> None:
    app.add_url_rule("/", "signup_form", _signup_form)
    app.add_url_rule("/signup", "signup", _signup, methods=["POST"])
    app.add_url_rule("/c/<token>", "confirm", _confirm, methods=["GET", "POST"])
    app.add_url_rule("/m/<token>", "manage", _manage)
    app.add_url_rule("/m/<token>/add", "add", _add, methods=["POST"])
    app.add_url_rule("/m/<token>/s/<sid>", "edit", _edit, methods=["GET", "POST"])
    app.add_url_rule("/m/<token>/s/<sid>/<action>", "act", _act, methods=["POST"])
    app.add_url_rule("/m/<token>/delete", "delete_all", _delete_all, methods=["POST"])
    app.add_url_rule("/m/<token>/new-link", "new_link", _new_link, methods=["POST"])
    app.add_url_rule("/m/<token>/export", "export", _export)
    app.add_url_rule("/lost", "lost", _lost, methods=["GET", "POST"])
    app.add_url_rule(
        "/u/<token>", "unsubscribe", csrf.exempt(_unsubscribe), methods=["GET", "POST"]
    )
    app.add_url_rule("/status", "status", _status)


# -- sign up ---------------------------------------------------------------------------


def _signup_form() -> str | tuple[str, int]:
    page = _page()
    if page.spec.signup_mode == "off":
        return _notice(page.spec.name, "Sign-up is closed. Ask the community's host.")
    return render_template("signup.html", **_form_context(page, {}, None), count=None)


def _signup() -> Any:
    page = _page()
    values = _form_values()
    if page.spec.signup_mode == "off":
        return _notice(page.spec.name, "Sign-up is closed. Ask the community's host.", 403)
    try:
        draft = parse_search(values, page.facets())
        if request.form.get("action") == "count":
            count = page.count(draft, g.ip)
            context = _form_context(page, values, None)
            return render_template("signup.html", **context, count=count, counted=True)
        if not may_sign_up(page.spec.signup_mode, page.spec.invite_code, values.get("invite")):
            raise FormError("invite", "is not this community's invitation code")
        delivery = values.get("delivery", "email")
        email = clean_email(values.get("email", "")) if delivery == "email" else None
        if delivery not in ("email", "feed"):
            raise FormError("delivery", "is not one of the choices offered")
    except FormError as exc:
        return render_template("signup.html", **_form_context(page, values, exc), count=None), 400
    if not page.limits.signup_per_ip.allow(g.ip):
        abort(429)
    if values.get("website"):  # the honeypot: people never see it, bots fill it in
        return _notice("Check your mail", "We sent you a link to confirm.", 200)
    if email is None:
        return _feed_signup(page, draft)
    _, token = page.members.start_signup(email, draft)
    subject, body = confirmation_text(page.spec.name, draft.title, page.link(f"/c/{token}"))
    page.mail(email, subject, body)  # the same answer whether it went or not
    return _notice(
        "Check your mail",
        "We sent you a link to confirm. Nothing else is sent to your address until you "
        "press the button on that page. The link works for 48 hours.",
    )


def _feed_signup(page: Page, draft: SearchDraft) -> BaseResponse:
    confirmed = page.members.add_feed_member(draft)
    token = page.members.manage_token(confirmed.member.id)
    return redirect(url_for("manage", token=token, new=1), 303)


def _confirm(token: str) -> Any:
    page = _page()
    draft = page.members.pending_for(token)
    if draft is None:
        abort(404)
    if request.method == "GET":
        return render_template("confirm.html", spec=page.spec, draft=draft, token=token)
    try:
        confirmed = page.members.confirm(token, page.spec.limits.searches_per_member)
    except TokenError:
        abort(404)
    except LimitError:
        return _notice(
            "Too many searches",
            f"You already have {page.spec.limits.searches_per_member} searches; delete one "
            'on your manage page first ("Lost your link?" sends it to you).',
            400,
        )
    manage = page.members.manage_token(confirmed.member.id)
    return redirect(url_for("manage", token=manage, new=1), 303)


# -- manage ------------------------------------------------------------------------------


def _member_or_404(token: str) -> Member:
    member = _page().members.member_for_manage(token)
    if member is None:
        abort(404)
    return member


def _manage(token: str) -> str:
    page = _page()
    member = _member_or_404(token)
    feed = page.link(f"/feed/{page.members.feed_token(member.id)}") if member.feed else None
    return render_template(
        "manage.html",
        **_form_context(page, {}, None),
        member=member,
        token=token,
        searches=page.members.searches_of(member.id),
        feed_url=feed,
        new=request.args.get("new") == "1",
    )


def _add(token: str) -> Any:
    page = _page()
    member = _member_or_404(token)
    values = _form_values()
    try:
        draft = parse_search(values, page.facets())
        page.members.add_search(member.id, draft, page.spec.limits.searches_per_member)
    except FormError as exc:
        return _manage_with_error(page, member, token, values, exc)
    except LimitError:
        error = FormError("title", f"you have {page.spec.limits.searches_per_member} searches")
        return _manage_with_error(page, member, token, values, error)
    return redirect(url_for("manage", token=token), 303)


def _manage_with_error(
    page: Page, member: Member, token: str, values: dict[str, str], error: FormError
) -> tuple[str, int]:
    html = render_template(
        "manage.html",
        **_form_context(page, values, error),
        member=member,
        token=token,
        searches=page.members.searches_of(member.id),
        feed_url=None,
        new=False,
    )
    return html, 400


def _owned(member: Member, sid: str) -> None:
    search = _page().members.search(sid)
    if search is None or search.member_id != member.id:
        abort(404)


def _edit(token: str, sid: str) -> Any:
    page = _page()
    member = _member_or_404(token)
    _owned(member, sid)
    search = page.members.search(sid)
    assert search is not None
    values = _draft_values(as_draft(search)) if request.method == "GET" else _form_values()
    error = None
    if request.method == "POST":
        try:
            page.members.edit_search(sid, parse_search(values, page.facets()))
            return redirect(url_for("manage", token=token), 303)
        except FormError as exc:
            error = exc
    context = _form_context(page, values, error)
    html = render_template("edit.html", **context, token=token, sid=sid)
    return html, 400 if error else 200


def _act(token: str, sid: str, action: str) -> BaseResponse:
    page = _page()
    member = _member_or_404(token)
    _owned(member, sid)
    if action == "pause":
        page.members.set_paused(sid, True)
    elif action == "resume":
        page.members.set_paused(sid, False)
    elif action == "delete":
        page.members.unsubscribe(sid)
    else:
        abort(404)
    return redirect(url_for("manage", token=token), 303)


def _delete_all(token: str) -> tuple[str, int]:
    member = _member_or_404(token)
    _page().members.remove_member(member.id)
    return _notice(
        "Everything about you is deleted",
        "Your address, your searches and your links are gone from this community's alertd.",
    )


def _new_link(token: str) -> BaseResponse:
    page = _page()
    member = _member_or_404(token)
    page.members.revoke_links(member.id)
    return redirect(url_for("manage", token=page.members.manage_token(member.id)), 303)


def _export(token: str) -> Response:
    page = _page()
    member = _member_or_404(token)
    body = json.dumps(page.members.export(member.id), indent=2, ensure_ascii=False)
    return Response(
        body,
        mimetype="application/json",
        headers={"Content-Disposition": 'attachment; filename="my-alerts.json"'},
    )


# -- lost link, unsubscribe, status ---------------------------------------------------------


def _lost() -> Any:
    page = _page()
    if request.method == "GET":
        return render_template("lost.html", spec=page.spec, error=None, values={})
    values = _form_values()
    try:
        email = clean_email(values.get("email", ""))
        clean_text(values, "website", 200)
    except FormError as exc:
        return render_template("lost.html", spec=page.spec, error=exc, values=values), 400
    if not page.limits.lost_per_ip.allow(g.ip):
        abort(429)
    member = None if values.get("website") else page.members.member_by_email(email)
    if member is not None and member.email is not None:
        subject, body = manage_text(
            page.spec.name, page.members.manage_url(member.id, page.spec.public_url)
        )
        page.mail(member.email, subject, body)
    # The same words whether the address is a member's or not.
    return _notice(
        "Check your mail",
        "If that address has alerts here, its manage link is on its way.",
    )


def _unsubscribe(token: str) -> Any:
    page = _page()
    search = page.members.search_for_unsubscribe(token)
    if request.method == "GET":
        if search is None:
            abort(404)
        return render_template("unsubscribe.html", spec=page.spec, search=search, token=token)
    # RFC 8058: the POST's body is List-Unsubscribe=One-Click; the token authenticates.
    if request.form.get("List-Unsubscribe") != "One-Click":
        abort(400)
    if search is None:
        abort(404)
    page.members.unsubscribe(search.id)
    return _notice("Unsubscribed", f"You will get no more alerts for “{search.title}”.")


def _status() -> str:
    page = _page()
    members, searches = page.members.counts()
    status = page.status()
    ago = None
    if status.last_cycle_ended is not None:
        ago = max(0, int((datetime.now(UTC) - status.last_cycle_ended).total_seconds()))
    return render_template(
        "status.html",
        spec=page.spec,
        members=members,
        searches=searches,
        status=status,
        ago=ago,
    )
