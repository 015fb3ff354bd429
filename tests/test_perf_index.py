"""A changed job is judged only against the queries that may list it: the queries are
indexed by their exact filters, and the index leaves out exactly what ``judge`` rules out."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from alertd import plan
from alertd.api import OpenTrainClient
from alertd.config import load_config
from alertd.deliver import Outcome
from alertd.market import CATEGORIES, LANGUAGES, Market
from alertd.models import Job, Pay, SavedSearch, Target
from alertd.pipeline import run_once
from alertd.plan import QueryIndex, Verdict, group_queries, judge
from alertd.render import Message
from alertd.standin import StandInServer
from alertd.store import Store

FAST = 100_000
PAY_TYPES = ("PAY_PER_HOUR", "FIXED_PRICE", "PAY_PER_LABEL")
COUNTRIES = ("US", "DE", "ES")


def spelled(rng: random.Random, value: str) -> str:
    """The value, now and then in another case (the API's meaning of case is its own)."""
    return value if rng.random() < 0.8 else rng.choice((value.upper(), value.lower()))


def random_search(rng: random.Random, index: int) -> SavedSearch:
    def maybe(values: tuple[str, ...]) -> str | None:
        return spelled(rng, rng.choice(values)) if rng.random() < 0.5 else None

    return SavedSearch(
        name=f"s{index}",
        q=rng.choice(("audio", None, None, None)),
        category=maybe(CATEGORIES),
        language=maybe(LANGUAGES),
        country=maybe(COUNTRIES),
        pay_type=maybe(PAY_TYPES),
    )


def random_job(rng: random.Random, index: int) -> Job:
    """A job with any field known, missing (None), empty, or spelled in another case."""

    def some(values: tuple[str, ...]) -> tuple[str, ...] | None:
        roll = rng.random()
        if roll < 0.1:
            return None
        if roll < 0.2:
            return ()
        return tuple(spelled(rng, v) for v in rng.sample(values, rng.randint(1, 2)))

    pay_roll = rng.random()
    pay = None if pay_roll < 0.1 else Pay(payment_type=rng.choice((*PAY_TYPES, None, "")))
    return Job(
        id=f"j{index}",
        category=rng.choice((*CATEGORIES, None, "")),
        languages=some(LANGUAGES),
        countries=some(COUNTRIES),
        pay=pay,
    )


@pytest.mark.parametrize("seed", range(8))
def test_the_index_leaves_out_exactly_the_queries_judge_rules_out(seed: int) -> None:
    rng = random.Random(seed)
    queries = group_queries(random_search(rng, i) for i in range(400))
    index = QueryIndex(queries)
    for number in range(300):
        job = random_job(rng, number)
        expected = [q for q in queries.values() if judge(job, q.query) is not Verdict.NO_MATCH]
        assert index.candidates(job) == expected, job  # the same queries, in the same order


def test_the_index_is_selective_for_a_job_that_shows_its_fields() -> None:
    searches = [
        SavedSearch(name=f"s{n}", category=c, language=lang)
        for n, (c, lang) in enumerate(itertools.product(CATEGORIES, LANGUAGES))
    ]
    queries = group_queries(searches)
    job = Job(id="j", category=CATEGORIES[0], languages=(LANGUAGES[0],))
    found = QueryIndex(queries).candidates(job)
    assert [q.query for q in found] == [{"category": CATEGORIES[0], "language": LANGUAGES[0]}]
    unknown = Job(id="k", category=None, languages=(LANGUAGES[0],))  # the API decides
    assert len(QueryIndex(queries).candidates(unknown)) == len(CATEGORIES)


class Accept:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def __call__(self, target: Target, message: Message) -> Outcome:
        self.sent += [(target.label, item.job.id) for item in message.items]
        return Outcome(True)


@pytest.fixture
def fast_standin(market: Market) -> Iterator[StandInServer]:
    server = StandInServer(market, cache_ttl=0, rate_limit=FAST).start()
    yield server
    server.stop()


def test_a_busy_cycle_judges_a_changed_job_only_against_queries_that_may_list_it(
    market: Market, fast_standin: StandInServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pairs = list(itertools.product(CATEGORIES, LANGUAGES))  # 6 x 7 = 42 distinct queries
    lines = [f"api_url: {fast_standin.url}", f"state_dir: {tmp_path / 'state'}"]
    lines += ["requests_per_minute: 120", "poll_interval: 5m", "searches:"]
    for n, (category, language) in enumerate(pairs):
        lines += [f"  - name: s{n}", f"    category: {category}", f"    language: {language}"]
        lines += [f"    notify: ['json://127.0.0.1:9/s{n}']"]
    path = tmp_path / "alerts.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = load_config(path)
    send = Accept()

    def one_cycle() -> None:
        with (
            Store.open(config.state_dir) as store,
            OpenTrainClient(fast_standin.url, requests_per_minute=FAST, api_limit=FAST) as client,
        ):
            run_once(config, client, store, send)

    one_cycle()  # primes every search
    judged: list[str] = []

    def counting(job: Job, query: dict[str, str]) -> Verdict:
        judged.append(job.id)
        return judge(job, query)

    monkeypatch.setattr(plan, "judge", counting)
    for n in range(5):
        market.add_job(id=f"new{n}", category=CATEGORIES[n], languages=[LANGUAGES[n]])
    one_cycle()
    expected = [(f"json://127.0.0.1:9/s{n * 7 + n}", f"new{n}") for n in range(5)]
    assert sorted(send.sent) == sorted(expected)
    assert len(judged) == 5  # one query each, not 42
