"""A first start with many new searches logs one summary of what it primed, not a line
per search (1,000 lines would fill a 64 KiB pipe); the names are there at DEBUG."""

from __future__ import annotations

import subprocess
from pathlib import Path

from alertd.market import CATEGORIES, Market
from tests.conftest import ALERTD, WriteConfig

SEARCHES = 1000


def searches_yaml(count: int) -> str:
    """``count`` searches over a few categories (a few distinct queries), to stdout."""
    lines = ["searches:"]
    for index in range(count):
        category = CATEGORIES[index % 4]
        lines += [f"  - name: member{index:04d}", f"    category: {category}"]
    return "\n".join(lines) + "\n"


def first_start(config: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [*ALERTD, "once", "-c", str(config)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def info_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if " INFO " in line]


def test_a_first_start_with_1000_new_searches_logs_one_priming_summary(
    market: Market, write_config: WriteConfig
) -> None:
    for index in range(12):
        market.add_job(title=f"Open job {index}", category=CATEGORIES[index % 4])
    config = write_config(f"log_level: INFO\n{searches_yaml(SEARCHES)}")
    result = first_start(config)
    lines = info_lines(result.stderr)
    assert len(lines) < 10, f"{len(lines)} INFO lines, e.g. {lines[:3]}"
    summary = [line for line in lines if "primed 1,000 new searches silently" in line]
    assert len(summary) == 1, lines
    assert "12 open matches" not in summary[0]  # each search recorded its own 3
    assert "3,000 open matches recorded as seen" in summary[0]
    assert "member0999" not in result.stderr  # no name per search at INFO
    assert result.stdout == ""  # silent: nothing alerted


def test_the_names_of_primed_searches_are_logged_at_debug(
    market: Market, write_config: WriteConfig
) -> None:
    market.add_job(title="Open job", category=CATEGORIES[0])
    config = write_config(f"log_level: DEBUG\n{searches_yaml(8)}")
    log = first_start(config).stderr
    for index in range(8):
        assert f"search 'member{index:04d}' primed: " in log
    assert "primed 8 new searches silently (2 open matches recorded as seen" in log
