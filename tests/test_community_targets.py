"""A member's mail target is the operator's ``community.mail`` URL with the member's
address as its one ``to=``, built for 10,000 members after every restart and every
change on the page: the operator's URL is parsed once for all of them, and each URL is
exactly what parsing it for each member would give."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest

from alertd.community import provider
from alertd.community.provider import address_url

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
