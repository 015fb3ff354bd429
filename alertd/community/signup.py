"""The public pages: sign up, confirm by a button, lost link, one-click unsubscribe,
status. A GET never changes anything: mail scanners follow links."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import abort, g, redirect, render_template, request, url_for
from werkzeug.wrappers import Response as BaseResponse

from alertd.community.mail import confirmation_text, manage_text
from alertd.community.page import Page, current_page, form_context, form_values, notice
from alertd.community.rules import FormError, clean_email, clean_text, may_sign_up, parse_search
from alertd.members import LimitError, SearchDraft, TokenError

# -- sign up ---------------------------------------------------------------------------


def signup_form() -> str | tuple[str, int]:
    """GET /: the sign-up form, its choices from the API's facets."""
    page = current_page()
    if page.spec.signup_mode == "off":
        return notice(page.spec.name, "Sign-up is closed. Ask the community's host.")
    return render_template("signup.html", **form_context(page, {}, None), count=None)


def signup() -> Any:
    """POST /signup: count matching jobs, or sign up (a feed at once; an address by a
    confirmation mail)."""
    page = current_page()
    values = form_values()
    if page.spec.signup_mode == "off":
        return notice(page.spec.name, "Sign-up is closed. Ask the community's host.", 403)
    try:
        draft = parse_search(values, page.facets())
        if request.form.get("action") == "count":
            count = page.count(draft, g.ip)
            context = form_context(page, values, None)
            return render_template("signup.html", **context, count=count, counted=True)
        if not may_sign_up(page.spec.signup_mode, page.spec.invite_code, values.get("invite")):
            raise FormError("invite", "is not this community's invitation code")
        delivery = values.get("delivery", "email" if page.spec.mail else "feed")
        if delivery not in ("email", "feed") or (delivery == "email" and not page.spec.mail):
            raise FormError("delivery", "is not one of the choices offered")
        email = clean_email(values.get("email", "")) if delivery == "email" else None
    except FormError as exc:
        return render_template("signup.html", **form_context(page, values, exc), count=None), 400
    if not page.limits.signup_per_ip.allow(g.ip):
        abort(429)
    if values.get("website"):  # the honeypot: people never see it, bots fill it in
        return notice("Check your mail", "We sent you a link to confirm.", 200)
    if email is None:
        return feed_signup(page, draft)
    _, token = page.members.start_signup(email, draft)
    subject, body = confirmation_text(page.spec.name, draft.title, page.link(f"/c/{token}"))
    page.mail(email, subject, body)  # the same answer whether it went or not
    return notice(
        "Check your mail",
        "We sent you a link to confirm. Nothing else is sent to your address until you "
        "press the button on that page. The link works for 48 hours.",
    )


def feed_signup(page: Page, draft: SearchDraft) -> BaseResponse:
    """A feed member at once (no address to confirm), sent to their manage page."""
    confirmed = page.members.add_feed_member(draft)
    token = page.members.manage_token(confirmed.member.id)
    return redirect(url_for("manage", token=token, new=1), 303)


def confirm(token: str) -> Any:
    """GET /c/<token> shows the button; only its POST confirms (mail scanners follow links)."""
    page = current_page()
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
        return notice(
            "Too many searches",
            f"You already have {page.spec.limits.searches_per_member} searches; delete one "
            'on your manage page first ("Lost your link?" sends it to you).',
            400,
        )
    manage = page.members.manage_token(confirmed.member.id)
    return redirect(url_for("manage", token=manage, new=1), 303)


# -- lost link, unsubscribe, status ---------------------------------------------------------


def lost() -> Any:
    """GET/POST /lost: mails the manage link when the address is a member's; answers the
    same either way."""
    page = current_page()
    if request.method == "GET":
        return render_template("lost.html", spec=page.spec, error=None, values={})
    values = form_values()
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
    return notice(
        "Check your mail",
        "If that address has alerts here, its manage link is on its way.",
    )


def unsubscribe(token: str) -> Any:
    """GET /u/<token> shows a button; a POST with ``List-Unsubscribe=One-Click`` (RFC
    8058) removes the search at once, without cookie or CSRF token: the token is enough."""
    page = current_page()
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
    return notice("Unsubscribed", f"You will get no more alerts for “{search.title}”.")


def status() -> str:
    """GET /status: counts, the last cycle, whether the API answers; nothing personal."""
    page = current_page()
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
