"""Seconds by default: a quiet poll costs one request, so the default polls every 10 s."""

from __future__ import annotations

import math

import yaml

from alertd.config import parse_config
from alertd.health import HealthLimits
from alertd.plan import ask_window
from alertd.scaffold import example_config
from alertd.settings import parse_duration


def test_the_default_and_the_example_poll_every_ten_seconds() -> None:
    config = parse_config("searches:\n  - name: a\n", "alerts.yaml")
    assert config.poll_interval == 10
    assert parse_duration(yaml.safe_load(example_config())["poll_interval"]) == 10


def test_the_default_poll_leaves_the_budget_to_the_work() -> None:
    config = parse_config("searches:\n  - name: a\n", "alerts.yaml")
    feed = 60 / config.poll_interval  # one request a quiet cycle
    refresh_floor = 60 / config.poll_interval  # at most one query a cycle below 2,160 queries
    assert math.ceil(2160 * config.poll_interval / config.refresh_interval) == 1
    assert feed + refresh_floor <= config.requests_per_minute / 5  # 12 of 60: 48 left
    # A cycle with a query that takes its whole deadline still ends long before
    # `alertd health` would call the daemon stuck.
    longest = ask_window(config.poll_interval) + config.request_timeout
    assert longest < HealthLimits.for_interval(config.poll_interval).max_age
