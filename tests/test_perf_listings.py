"""A job that several of a busy cycle's queries list is parsed once that cycle: the
client remembers each record it parsed (until the cycle ends) and an identical record
reuses the job. A record that differs in any field is parsed again."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest

import alertd.api
from alertd.api import OpenTrainClient
from alertd.models import ParsedJob
from alertd.pipeline import run_once
from alertd.store import Store
from tests.world import FAST, World

# Both free text: only asking each query can tell, so the busy cycle asks both.
SEARCHES = {"german": {"q": "german"}, "review": {"q": "review"}}


@pytest.fixture
def parsed(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """How many times each job id was parsed (from a list or from /jobs/{id})."""
    counts: Counter[str] = Counter()
    real = alertd.api.parse_job

    def counting(raw: object) -> ParsedJob:
        counts[str(raw.get("id")) if isinstance(raw, dict) else "?"] += 1
        return real(raw)

    monkeypatch.setattr(alertd.api, "parse_job", counting)
    return counts


def test_a_job_two_queries_list_is_parsed_once_and_alerts_both(
    tmp_path: Path, parsed: Counter[str]
) -> None:
    with World(tmp_path) as w:
        config = w.searches(SEARCHES)
        w.cycle()
        w.advance(timedelta(minutes=1))
        w.market.add_job(id="G", title="German review", category="Text Annotation")
        w.advance(timedelta(minutes=1))
        parsed.clear()
        with (
            Store.open(config.state_dir) as store,
            OpenTrainClient(w.url, requests_per_minute=FAST, api_limit=FAST) as client,
        ):
            report = run_once(config, client, store, w.send, clock=w.clock)
            remembered = len(client.listed)
    assert report.ok and report.new_jobs == 2  # one job, new to each search
    assert sorted(target for target, _ in w.send.sent) == ["german", "review"]
    # Once from the feed's /jobs/G, once from the first list; the second list reuses it.
    assert parsed["G"] == 2
    assert remembered == 0  # nothing kept past the cycle


def test_a_job_that_changed_between_two_lists_is_parsed_again(
    tmp_path: Path, parsed: Counter[str]
) -> None:
    with World(tmp_path) as w:
        w.market.add_job(id="G", title="German review", category="Text Annotation")
        with OpenTrainClient(w.url, requests_per_minute=FAST, api_limit=FAST) as client:
            first = client.search_jobs({"q": "german"})
            again = client.search_jobs({"q": "review"})
            w.market.update_job("G", title="German review, paid more")
            changed = client.search_jobs({"q": "german"})
    titles = [[j.title for j in r.jobs if j.id == "G"] for r in (first, again, changed)]
    assert titles == [["German review"], ["German review"], ["German review, paid more"]]
    assert parsed["G"] == 2  # the identical record once, the changed one again
