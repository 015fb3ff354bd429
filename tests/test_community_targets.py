"""The members' searches and their mail targets, built for 10,000 members after every
restart and every change on the page: a target is the operator's ``community.mail``
URL with the member's address as its one ``to=`` (the operator's URL parsed once for all
of them, each URL exactly what parsing it for that member would give), and a change
builds again only the searches it changed."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest

from alertd.community import provider
from alertd.community.provider import MemberSearches, address_url
from alertd.members import Members, SearchDraft
from tests.test_community_provider import SPEC

OPERATOR_URLS = [
    "mailto://127.0.0.1:2525?from=alerts@example.org",
    "mailtos://alerts:s%40cret@smtp.example.org?from=alerts@example.org&name=Annotators+Guild",
    "mailtos://alerts:pw@smtp.example.org:465?to=ops@example.org&from=a@example.org&cc=",
    "mailto://smtp.example.org",
    "mailto://smtp.example.org?from=a%26b@example.org&mode=ssl&to=x@example.org&to=y@example.org",
]
ADDRESSES = ["ana@example.org", "ana+jobs@example.org", "o'neil@example.org", "zoë@exämple.org"]


def by_parsing_each_time(operator_url: str, to: str) -> str:
    """The oracle: the operator's URL parsed for this member alone."""
    parts = urlsplit(operator_url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "to"]
    return urlunsplit(parts._replace(query=urlencode([*query, ("to", to)])))


@pytest.mark.parametrize("operator_url", OPERATOR_URLS)
@pytest.mark.parametrize("to", ADDRESSES)
def test_a_members_url_is_the_operators_with_their_address_as_the_one_to(
    operator_url: str, to: str
) -> None:
    url = address_url(operator_url, to)
    assert url == by_parsing_each_time(operator_url, to)
    assert [v for k, v in parse_qsl(urlsplit(url).query) if k == "to"] == [to]


def test_the_operators_url_is_parsed_once_for_10000_members(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []

    def counting(query: str, **kwargs: bool) -> list[tuple[str, str]]:
        calls.append(query)
        return parse_qsl(query, **kwargs)

    monkeypatch.setattr(provider, "parse_qsl", counting)
    provider._operator_parts.cache_clear()  # parsed by an earlier test: start afresh
    operator_url = "mailtos://alerts:pw@smtp.example.org?from=alerts@example.org"
    urls = {address_url(operator_url, f"m{n}@example.org") for n in range(10_000)}
    assert len(urls) == 10_000
    assert len(calls) == 1, f"parsed {len(calls):,} times"


def test_a_change_on_the_page_builds_only_the_searches_it_changed(tmp_path: Path) -> None:
    members = Members.open(tmp_path)
    confirmed = []
    for n in range(20):
        _, token = members.start_signup(f"m{n}@example.org", SearchDraft(title="A", q="audio"))
        confirmed.append(members.confirm(token, limit=10))
    provider = MemberSearches(members, SPEC)
    before = {s.name: s for s in provider.searches()}
    edited, paused = confirmed[3].search.id, confirmed[7].search.id
    members.edit_search(edited, SearchDraft(title="A", q="german audio"))
    members.set_paused(paused, True)
    after = {s.name: s for s in provider.searches()}
    assert after[f"member:{edited}"].q == "german audio"  # the edit is what the cycle gets
    assert f"member:{paused}" not in after
    kept = [name for name, search in after.items() if search is before[name]]
    assert len(kept) == 18  # the other 18 as they were, not built again
    assert [s.name for s in provider.searches()] == list(after)  # the table's order
