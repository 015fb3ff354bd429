"""Every field of every public form, sent what no form offers (digits Python cannot read,
control and invisible characters, other scripts, numbers too large for a float): a clear
4xx or the usual answer, never a 500."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from alertd.market import Market
from alertd.standin import StandInServer
from tests.pageworld import PageWorld, confirm_by_mail, csrf_of, page_world, sign_up

ODD = (
    "²",  # a digit to str.isdigit, not to int()
    "٣",  # an Arabic-Indic three
    "1e999",
    "nan",
    "-0",
    "\x00",
    "\u202e\u200b",  # right-to-left override, zero-width space
    "\ud800".encode("utf-8", "surrogatepass").decode("latin-1"),  # a lone surrogate's bytes
    "a\r\nBcc: x@example.org",
    "\u3000",  # an ideographic space
    "9" * 400,
)
SIGNUP_FIELDS = (
    "q", "title", "exclude", "category", "language", "country", "pay_type", "min_pay",
    "pace", "digest_hour", "delivery", "email", "invite", "website", "action",
)  # fmt: skip
EDIT_FIELDS = ("q", "title", "exclude", "min_pay", "pace", "digest_hour", "pay_type")


@pytest.fixture
def world(market: Market, standin: StandInServer, state_dir: Path) -> Iterator[PageWorld]:
    with page_world(standin, state_dir) as world:
        yield world


def test_no_value_in_any_signup_field_makes_the_page_fail(world: PageWorld) -> None:
    failed = []
    for n, (field, value) in enumerate(itertools.product(SIGNUP_FIELDS, ODD)):
        with world.client(ip=f"10.0.{n // 200}.{n % 200 + 1}") as client:  # no flood limit
            extra = {"pace": "daily", "digest_hour": value} if field == "digest_hour" else {}
            answer = sign_up(world, client, None, **{field: value, **extra})
            if answer.status_code >= 500:
                failed.append((field, value, answer.status_code))
    assert failed == []


def test_no_value_in_any_field_of_a_members_edit_or_lost_link_form_fails(
    world: PageWorld,
) -> None:
    failed = []
    with world.client() as client:
        sign_up(world, client, "dee@example.org")
        manage = str(confirm_by_mail(world, client, "dee@example.org").headers["location"])
        manage = manage.split("?")[0]
        [(_, search)] = world.members.active()
        edit = f"{manage}/s/{search.id}"
        token = csrf_of(client, edit)
        for field, value in itertools.product(EDIT_FIELDS, ODD):
            form = {"csrf_token": token, "q": "audio", "pace": "now", field: value}
            if field == "digest_hour":
                form["pace"] = "daily"
            answer = client.post(edit, data=form)
            if answer.status_code >= 500:
                failed.append((field, value, answer.status_code))
    for n, value in enumerate(ODD):
        with world.client(ip=f"10.1.0.{n + 1}") as client:
            answer = client.post(
                "/lost", data={"csrf_token": csrf_of(client, "/lost"), "email": value}
            )
            if answer.status_code >= 500:
                failed.append(("lost", value, answer.status_code))
    assert failed == []
