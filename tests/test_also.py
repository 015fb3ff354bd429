"""What else is worth an alert, opt-in per search (``also:``): a raise, a reopening."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from alertd.market import Market
from tests.conftest import RunCli, WriteConfig
from tests.world import World

PAY = {"paymentType": "PAY_PER_HOUR", "currency": "USD", "hourlyMin": 12, "hourlyMax": 18}


def titles(output: str) -> list[str]:
    return [line.removeprefix("=== ") for line in output.splitlines() if line.startswith("=== ")]


def alerted(write_config: WriteConfig, run_cli: RunCli, market: Market, also: str) -> Path:
    """A primed search with ``also``, that has alerted job J."""
    config = write_config(f"searches:\n  - name: mine\n    also: {also}\n")
    run_cli("once", "-c", config)
    market.add_job(id="J", title="Audio review", pay=PAY)
    assert titles(run_cli("once", "-c", config).stdout) == ["New OpenTrain job: Audio review"]
    return config


def test_a_raise_alerts_once_with_the_old_and_new_pay(
    write_config: WriteConfig, run_cli: RunCli, market: Market
) -> None:
    config = alerted(write_config, run_cli, market, "[pay_raised]")
    market.update_job("J", pay={**PAY, "hourlyMax": 25})
    raised = run_cli("once", "-c", config)
    assert titles(raised.stdout) == ["Pay raised: Audio review"]
    assert "Pay: $12–$18/hour → $12–$25/hour" in raised.stdout
    market.update_job("J", title="Audio review")  # another edit, the same pay: no change
    assert titles(run_cli("once", "-c", config).stdout) == []
    market.update_job("J", pay={**PAY, "hourlyMax": 20})  # lowered: not worth an alert
    assert titles(run_cli("once", "-c", config).stdout) == []
    market.update_job("J", pay={**PAY, "hourlyMax": 24})  # up from 20, but not above 25
    assert titles(run_cli("once", "-c", config).stdout) == []
    market.update_job("J", pay={**PAY, "hourlyMax": 30})
    assert titles(run_cli("once", "-c", config).stdout) == ["Pay raised: Audio review"]


def test_without_also_a_raise_is_not_an_alert(
    write_config: WriteConfig, run_cli: RunCli, market: Market
) -> None:
    config = alerted(write_config, run_cli, market, "[]")
    market.update_job("J", pay={**PAY, "hourlyMax": 25})
    assert titles(run_cli("once", "-c", config).stdout) == []


def test_a_job_closed_and_open_again_alerts_once_as_reopened(
    write_config: WriteConfig, run_cli: RunCli, market: Market
) -> None:
    config = alerted(write_config, run_cli, market, "[reopened, pay_raised]")
    market.close_job("J")
    assert titles(run_cli("once", "-c", config).stdout) == []
    market.update_job("J", status="OPEN")
    assert titles(run_cli("once", "-c", config).stdout) == ["Reopened: Audio review"]
    assert titles(run_cli("once", "-c", config).stdout) == []


def test_a_job_reopened_long_after_it_was_forgotten_alerts_as_reopened(tmp_path: Path) -> None:
    with World(tmp_path, seed=3) as w:
        w.body("searches:\n  - name: mine\n    also: reopened\n")
        w.cycle()
        w.advance(timedelta(minutes=1))
        w.market.add_job(id="J", title="Audio review")
        w.cycle()
        w.market.close_job("J")
        w.cycle(timedelta(minutes=1))
        w.cycle(timedelta(hours=3))  # the closed job is forgotten by every search
        w.market.update_job("J", status="OPEN")
        w.cycle(timedelta(minutes=1))
        w.cycle()
    assert w.send.titles() == ["New OpenTrain job: Audio review", "Reopened: Audio review"]


def test_also_takes_only_what_it_knows(write_config: WriteConfig, run_cli: RunCli) -> None:
    config = write_config("searches:\n  - name: mine\n    also: [pay_rised]\n")
    result = run_cli("validate", "-c", config)
    assert result.exit_code == 2
    assert "searches[0].also[0]" in result.output and "pay_raised" in result.output
