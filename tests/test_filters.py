"""A search's own filters: what the API cannot ask (minimum pay, excluded words, ...)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from alertd.market import Market
from alertd.match import why_dropped
from alertd.models import Filters, Job, MinPay, Pay, SavedSearch
from tests.conftest import RunCli, WriteConfig
from tests.world import alerts_in


def hourly(low: float | None, high: float | None = None, rate: float | None = None) -> Pay:
    return Pay("PAY_PER_HOUR", "USD", hourly_rate=rate, hourly_min=low, hourly_max=high)


FIXED = Pay("FIXED_PRICE", "USD", fixed_price=200)
PER_LABEL = Pay("PAY_PER_LABEL", "USD", per_label_rate=0.04)

# (filters, job, why it is dropped: None when it passes)
TABLE: list[tuple[str, Filters, Job, str | None]] = [
    ("a range passes by its top", Filters(MinPay(hourly=20)), Job("1", pay=hourly(12, 22)), None),
    (
        "a range whose top is short",
        Filters(MinPay(hourly=25)),
        Job("1", pay=hourly(12, 22)),
        "min_pay.hourly: pays at most 22 USD, below 25",
    ),
    ("a single rate", Filters(MinPay(hourly=15)), Job("1", pay=hourly(None, rate=15)), None),
    (
        "a minimum only",
        Filters(MinPay(hourly=15)),
        Job("1", pay=hourly(12)),
        "min_pay.hourly: pays at most 12 USD, below 15",
    ),
    (
        "an hourly minimum never filters fixed",
        Filters(MinPay(hourly=99)),
        Job("1", pay=FIXED),
        None,
    ),
    (
        "a fixed minimum",
        Filters(MinPay(fixed=250)),
        Job("1", pay=FIXED),
        "min_pay.fixed: pays at most 200 USD, below 250",
    ),
    (
        "a per-label minimum",
        Filters(MinPay(per_label=0.05)),
        Job("1", pay=PER_LABEL),
        "min_pay.per_label: pays at most 0.04 USD, below 0.05",
    ),
    ("pay not stated passes min_pay", Filters(MinPay(hourly=15)), Job("1"), None),
    (
        "pay not stated, pay required",
        Filters(pay_required=True),
        Job("1"),
        "pay_required: the job does not state its pay",
    ),
    (
        "a pay with no amount is not stated",
        Filters(pay_required=True),
        Job("1", pay=Pay("PAY_PER_HOUR", "USD")),
        "pay_required: the job does not state its pay",
    ),
    ("pay stated, pay required", Filters(pay_required=True), Job("1", pay=FIXED), None),
    (
        "an excluded word in the title, any case",
        Filters(exclude=("transcription",)),
        Job("1", title="Audio TRANSCRIPTION (German)"),
        "exclude: 'transcription' in the title",
    ),
    (
        "only whole words",
        Filters(exclude=("scription",)),
        Job("1", title="Audio transcription"),
        None,
    ),
    (
        "a phrase across a line break, in the description",
        Filters(exclude=("medical coding",)),
        Job("1", title="Coder", description="Some medical\n  coding needed"),
        "exclude: 'medical coding' in the description",
    ),
    (
        "a word hidden by a zero-width space",
        Filters(exclude=("transcription",)),
        Job("1", summary="tran\u200bscription work"),
        "exclude: 'transcription' in the summary",
    ),
    (
        "experience allowed",
        Filters(experience=("ENTRY", "INTERMEDIATE")),
        Job("1", experience_level="entry"),
        None,
    ),
    (
        "experience not allowed",
        Filters(experience=("ENTRY",)),
        Job("1", experience_level="EXPERT"),
        "experience EXPERT is not one of ENTRY",
    ),
    ("experience not stated", Filters(experience=("ENTRY",)), Job("1"), None),
    ("open to every country", Filters(countries=("PH",)), Job("1", countries=()), None),
    ("open to my country", Filters(countries=("PH", "US")), Job("1", countries=("US",)), None),
    (
        "not open to my countries",
        Filters(countries=("PH",)),
        Job("1", countries=("US", "CA")),
        "countries: open to US, CA only",
    ),
    (
        "label types any-of",
        Filters(label_types=("bounding_box", "polygon")),
        Job("1", label_types=("polygon",)),
        None,
    ),
    (
        "label types none of",
        Filters(label_types=("bounding_box",)),
        Job("1", label_types=("classification",)),
        "labelTypes classification is not one of bounding_box",
    ),
    (
        "data type",
        Filters(data_types=("image", "video")),
        Job("1", data_type="text"),
        "dataType text is not one of image, video",
    ),
    (
        "employment types",
        Filters(employment_types=("CONTRACTOR",)),
        Job("1", employment_types=("FULL_TIME",)),
        "employmentTypes FULL_TIME is not one of CONTRACTOR",
    ),
]


@pytest.mark.parametrize(("case", "filters", "job", "dropped"), TABLE, ids=[t[0] for t in TABLE])
def test_each_filter_keeps_or_drops_a_job_and_says_why(
    case: str, filters: Filters, job: Job, dropped: str | None
) -> None:
    assert why_dropped(job, filters) == dropped


def test_a_search_without_its_own_filters_keeps_its_fingerprint() -> None:
    """Stored searches are primed under their fingerprint: adding filters to alertd must
    not make every existing search start silent again."""
    search = SavedSearch(name="a", q="audio", country="US")
    before = hashlib.sha256(json.dumps(search.query(), sort_keys=True).encode()).hexdigest()[:16]
    assert search.fingerprint() == before
    filtered = SavedSearch(name="a", q="audio", country="US", filters=Filters(MinPay(hourly=1)))
    assert filtered.fingerprint() != before  # editing a search's filters starts it silent


# -- end to end: alertd once, the stand-in API, what is printed ---------------------

PER_HOUR = {"paymentType": "PAY_PER_HOUR", "currency": "USD", "hourlyMin": 10}

# (the filter as written in YAML, a job it keeps, a job it drops)
END_TO_END: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("min_pay: {hourly: 15}", {"pay": {**PER_HOUR, "hourlyMax": 18}}, {"pay": PER_HOUR}),
    ("pay_required: true", {}, {"pay": None}),
    ("exclude: [transcription]", {}, {"title": "Podcast transcription"}),
    ("experience: [ENTRY]", {"experienceLevel": "ENTRY"}, {"experienceLevel": "EXPERT"}),
    ("countries: [ph]", {"countries": []}, {"countries": ["US"]}),
    ("labelTypes: [polygon]", {"labelTypes": ["polygon"]}, {"labelTypes": ["classification"]}),
    ("dataType: image", {"dataType": "image"}, {"dataType": "text"}),
    ("employmentTypes: [CONTRACTOR]", {}, {"employmentTypes": ["FULL_TIME"]}),
]


@pytest.mark.parametrize(
    ("written", "kept", "dropped"), END_TO_END, ids=[e[0].split(":")[0] for e in END_TO_END]
)
def test_a_filter_in_the_config_decides_what_alerts(
    market: Market,
    write_config: WriteConfig,
    run_cli: RunCli,
    written: str,
    kept: dict[str, Any],
    dropped: dict[str, Any],
) -> None:
    config = write_config(f"searches:\n  - name: mine\n    {written}\n")
    assert run_cli("validate", "-c", config).exit_code == 0
    run_cli("once", "-c", config)
    market.add_job(**{"title": "Kept job", **kept})
    market.add_job(**{"title": "Dropped job", **dropped})
    result = run_cli("once", "-c", config)
    assert result.exit_code == 0, result.output
    assert alerts_in(result.stdout) == ["Kept job"]


def test_a_job_that_comes_to_fit_alerts_then(
    market: Market, write_config: WriteConfig, run_cli: RunCli
) -> None:
    config = write_config("searches:\n  - name: mine\n    min_pay: {hourly: 20}\n")
    run_cli("once", "-c", config)
    job = market.add_job(title="Underpaid for now", pay={**PER_HOUR, "hourlyMax": 15})
    assert alerts_in(run_cli("once", "-c", config).stdout) == []
    market.update_job(job["id"], pay={**PER_HOUR, "hourlyMax": 25})
    assert alerts_in(run_cli("once", "-c", config).stdout) == ["Underpaid for now"]
    assert alerts_in(run_cli("once", "-c", config).stdout) == []  # once


def test_preview_explain_names_the_filter_that_dropped_each_job(
    market: Market, write_config: WriteConfig, run_cli: RunCli
) -> None:
    market.add_job(title="Fits", pay={**PER_HOUR, "hourlyMax": 30})
    market.add_job(title="Too little", pay={**PER_HOUR, "hourlyMax": 12})
    market.add_job(title="Medical coding audit", pay={**PER_HOUR, "hourlyMax": 40})
    config = write_config(
        "searches:\n  - name: mine\n    min_pay: {hourly: 20}\n    exclude: medical coding\n"
    )
    plain = run_cli("preview", "-c", config, "mine")
    explained = run_cli("preview", "-c", config, "mine", "--explain")
    assert plain.exit_code == 0 and explained.exit_code == 0
    assert "Fits" in plain.output and "Too little" not in plain.output
    assert "1 open jobs match 'mine' now, 2 dropped (--explain shows why)" in plain.output
    assert "by min_pay.hourly: pays at most 12 USD, below 20" in explained.output
    assert "by exclude: 'medical coding' in the title" in explained.output
    first = run_cli("once", "-c", config).output  # preview recorded nothing ...
    assert "primed silently: mine" in first and "0 alerts sent" in first
    assert alerts_in(run_cli("once", "-c", config).stdout) == []  # ... the search primes now


@pytest.mark.parametrize(
    ("written", "message"),
    [
        ("min_pay: {}", "give at least one of hourly, fixed, per_label"),
        ("min_pay: {hourly: true}", "expected a number, not true/false"),
        ("min_pay: {hourly: 0}", "greater than 0"),
        ("min_pay: {daily: 3}", "unknown key 'daily'"),
        ("countries: [USA]", "'USA' is not a two-letter country code"),
        ("exclude: ['  ']", "at least 1 character"),
    ],
)
def test_a_filter_written_wrong_is_one_line_naming_it(
    write_config: WriteConfig, run_cli: RunCli, written: str, message: str
) -> None:
    config = write_config(f"searches:\n  - name: mine\n    {written}\n")
    result = run_cli("validate", "-c", config)
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    written_at = config.read_text().splitlines().index(f"    {written}") + 1
    assert f"{config}:{written_at}: searches[0]." in line and message in line
