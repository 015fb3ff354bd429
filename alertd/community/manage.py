"""A member's manage page, reached by their link (no password): list, edit, pause,
resume, delete one search, add one, export everything, delete everything, a new link."""

from __future__ import annotations

import json
from typing import Any

from flask import Response, abort, redirect, render_template, request, url_for
from werkzeug.wrappers import Response as BaseResponse

from alertd.community.page import (
    Page,
    current_page,
    draft_values,
    form_context,
    form_values,
    notice,
)
from alertd.community.rules import FormError, parse_search
from alertd.feeds import Feeds
from alertd.members import LimitError, Member, as_draft

# -- manage ------------------------------------------------------------------------------


def member_or_404(token: str) -> Member:
    """The member whose manage link ``token`` is, or a 404."""
    member = current_page().members.member_for_manage(token)
    if member is None:
        abort(404)
    return member


def manage(token: str) -> str:
    """GET /m/<token>: the member's searches and what they can do with them."""
    page = current_page()
    member = member_or_404(token)
    feed = page.members.feed_url(member.id, page.spec.public_url) if member.feed else None
    return render_template(
        "manage.html",
        **form_context(page, {}, None),
        member=member,
        token=token,
        searches=page.members.searches_of(member.id),
        feed_url=feed,
        new=request.args.get("new") == "1",
        telegram=page.telegram is not None,
        chat=page.members.chat_of(member.id) is not None,
    )


def add(token: str) -> Any:
    """POST /m/<token>/add: another search, within searches_per_member."""
    page = current_page()
    member = member_or_404(token)
    values = form_values()
    try:
        draft = parse_search(values, page.facets())
        page.members.add_search(member.id, draft, page.spec.limits.searches_per_member)
    except FormError as exc:
        return manage_with_error(page, member, token, values, exc)
    except LimitError:
        error = FormError("title", f"you have {page.spec.limits.searches_per_member} searches")
        return manage_with_error(page, member, token, values, error)
    return redirect(url_for("manage", token=token), 303)


def manage_with_error(
    page: Page, member: Member, token: str, values: dict[str, str], error: FormError
) -> tuple[str, int]:
    """The manage page again, with what was wrong in the add form."""
    html = render_template(
        "manage.html",
        **form_context(page, values, error),
        member=member,
        token=token,
        searches=page.members.searches_of(member.id),
        feed_url=None,
        new=False,
        telegram=page.telegram is not None,
        chat=page.members.chat_of(member.id) is not None,
    )
    return html, 400


def owned(member: Member, sid: str) -> None:
    """A 404 unless search ``sid`` is ``member``'s."""
    search = current_page().members.search(sid)
    if search is None or search.member_id != member.id:
        abort(404)


def edit(token: str, sid: str) -> Any:
    """GET/POST /m/<token>/s/<sid>: change a search's terms (it keeps its links)."""
    page = current_page()
    member = member_or_404(token)
    owned(member, sid)
    search = page.members.search(sid)
    assert search is not None
    values = draft_values(as_draft(search)) if request.method == "GET" else form_values()
    error = None
    if request.method == "POST":
        try:
            page.members.edit_search(sid, parse_search(values, page.facets()))
            return redirect(url_for("manage", token=token), 303)
        except FormError as exc:
            error = exc
    context = form_context(page, values, error)
    html = render_template("edit.html", **context, token=token, sid=sid)
    return html, 400 if error else 200


def act(token: str, sid: str, action: str) -> BaseResponse:
    """POST /m/<token>/s/<sid>/<pause|resume|delete>."""
    page = current_page()
    member = member_or_404(token)
    owned(member, sid)
    if action == "pause":
        page.members.set_paused(sid, True)
    elif action == "resume":
        page.members.set_paused(sid, False)
    elif action == "delete":
        page.members.unsubscribe(sid)
    else:
        abort(404)
    return redirect(url_for("manage", token=token), 303)


def delete_all(token: str) -> tuple[str, int]:
    """POST /m/<token>/delete: the member's address, searches and links leave the state,
    and so does their feed (it holds what they searched for and what it found)."""
    page = current_page()
    member = member_or_404(token)
    page.members.remove_member(member.id)
    if isinstance(page.feeds, Feeds):
        page.feeds.drop(f"member:{member.id}")
    return notice(
        "Everything about you is deleted",
        "Your address, your searches and your links are gone from this community's alertd.",
    )


def new_link(token: str) -> BaseResponse:
    """POST /m/<token>/new-link: new manage and feed links; the old ones stop working."""
    page = current_page()
    member = member_or_404(token)
    page.members.revoke_links(member.id)
    return redirect(url_for("manage", token=page.members.manage_token(member.id)), 303)


def export(token: str) -> Response:
    """GET /m/<token>/export: everything the table holds about the member, as JSON."""
    page = current_page()
    member = member_or_404(token)
    body = json.dumps(page.members.export(member.id), indent=2, ensure_ascii=False)
    return Response(
        body,
        mimetype="application/json",
        headers={"Content-Disposition": 'attachment; filename="my-alerts.json"'},
    )


def telegram(token: str) -> Any:
    """POST /m/<token>/telegram: a single-use code that links the member's Telegram chat
    (``/start <code>``), handed to Telegram by the bot's ``t.me`` link."""
    page = current_page()
    member = member_or_404(token)
    if page.telegram is None:
        abort(404)
    code = page.members.telegram_code(member.id)
    name = page.telegram()
    if name is None:  # the bot has not said its name yet: the code still works by hand
        return notice("Get it on Telegram", f"Send /start {code} to the community's bot.")
    return redirect(f"https://t.me/{name}?start={code}", 303)
