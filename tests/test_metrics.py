"""``alertd run --metrics-port``: Prometheus metrics and /healthz, read as a scraper would."""

from __future__ import annotations

import signal
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from alertd.api import OpenTrainClient
from alertd.config import load_config
from alertd.errors import ApiError
from alertd.health import HealthLimits, judge_health
from alertd.market import Market
from alertd.metrics import bind_metrics, serve_metrics
from alertd.models import format_time
from alertd.standin import Fault, StandInServer
from tests.conftest import RunCli, StartDaemon, WriteConfig, wait_for
from tests.webhook import WebhookCollector

TOKEN = "t0ken-in-the-path-9f8e7d"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def scrape(port: int) -> str:
    return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of the sample ``name`` with (at least) ``labels``, or None if absent."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and labels.items() <= s.labels.items():
                return float(s.value)
    return None


def healthz(port: int) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)


def test_metrics_show_a_delivered_alert_without_the_secret(
    market: Market,
    write_config: WriteConfig,
    webhook: WebhookCollector,
    start_daemon: StartDaemon,
    state_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HOOK_TOKEN", TOKEN)
    port = free_port()
    hook = f"{webhook.url}/${{HOOK_TOKEN}}"
    config = write_config(
        f"metrics_port: {port}\npoll_interval: 0.3\n"
        f"searches:\n  - name: all\n    notify: ['{hook}']\n"
    )
    proc = start_daemon(config)
    wait_for(lambda: (state_dir / "heartbeat.json").exists())
    market.add_job(title="Counted once")
    wait_for(lambda: len(webhook.received) == 1)
    assert webhook.seen[0][0].endswith(TOKEN)  # the token was used, so it had to be hidden
    wait_for(lambda: sample(scrape(port), "alertd_alerts_sent_total") == 1)

    text = scrape(port)
    assert TOKEN not in text
    assert (sample(text, "alertd_cycles_total") or 0) > 0
    assert (sample(text, "alertd_cycle_duration_seconds_count") or 0) > 0
    (label,) = {
        s.labels["target"]
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "alertd_alerts_sent_total"
    }
    assert "127.0.0.1" in label and TOKEN not in label
    assert sample(text, "alertd_alerts_sent_total", target=label) == 1
    assert sample(text, "alertd_alerts_failed_total", target=label) is None
    assert sample(text, "alertd_alerts_owed", target=label) == 0
    assert sample(text, "alertd_oldest_owed_age_seconds") == 0
    changes = sample(text, "alertd_api_requests_total", endpoint="jobs/changes", status="200")
    assert changes is not None and changes > 0
    assert (sample(text, "alertd_api_budget_used_requests") or 0) > 0
    assert sample(text, "alertd_api_budget_limit_requests") == 120
    assert (sample(text, "alertd_last_successful_cycle_timestamp_seconds") or 0) > 0
    assert sample(text, "alertd_searches_failing") == 0
    response = healthz(port)
    assert response.status_code == 200 and response.text.startswith("healthy: cycle ")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    with pytest.raises(httpx.ConnectError):  # the port is closed with the daemon
        scrape(port)


def test_healthz_says_503_and_why_when_the_api_is_down(
    write_config: WriteConfig,
    standin: StandInServer,
    start_daemon: StartDaemon,
) -> None:
    standin.add_fault(Fault("status", path="/jobs/changes", status=503, count=10_000))
    port = free_port()
    config = write_config(f"metrics_port: {port}\npoll_interval: 0.3\nsearches:\n  - name: a\n")
    start_daemon(config)

    def answered() -> bool:
        try:
            return healthz(port).status_code == 503 and "API did not answer" in healthz(port).text
        except httpx.TransportError:
            return False

    wait_for(answered, timeout=30)
    text = scrape(port)
    failed = sample(text, "alertd_api_requests_total", endpoint="jobs/changes", status="503")
    assert failed is not None and failed >= 3
    assert sample(text, "alertd_last_successful_cycle_timestamp_seconds") == 0


def test_a_metrics_port_in_use_is_one_line_and_exit_2(
    write_config: WriteConfig, run_cli: RunCli
) -> None:
    config = write_config("searches:\n  - name: a\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("run", "-c", config, "--metrics-port", str(port))
    assert result.exit_code == 2
    assert result.output.strip() == f"Error: --metrics-port {port} is in use"


def test_requests_are_counted_by_templated_endpoint(market: Market, standin: StandInServer) -> None:
    told: list[tuple[str, str]] = []
    job = market.add_job(title="One")
    with OpenTrainClient(standin.url, retry_delays=()) as client:
        client.on_request = lambda endpoint, status: told.append((endpoint, status))
        client.job(str(job["id"]))
        with pytest.raises(ApiError):
            client.job("never-listed")
        client.facet_counts()
    assert told == [("jobs/{id}", "200"), ("jobs/{id}", "404"), ("jobs/facets", "200")]


NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
LIMITS = HealthLimits(max_age=100, max_unreachable=3, max_owed_age=3600)


def beat(**fields: object) -> dict[str, object]:
    return {"at": format_time(NOW - timedelta(seconds=10)), "cycles": 4, **fields}


@pytest.mark.parametrize(
    ("heartbeat", "healthy", "says"),
    [
        (None, False, "no heartbeat in"),
        (beat(), True, "cycle 4 ended 10s ago"),
        (beat(at=format_time(NOW - timedelta(seconds=101))), False, "ended 101s ago"),
        (beat(unreachable_cycles=2), True, "cycle 4"),
        (beat(unreachable_cycles=3), False, "API did not answer in the last 3"),
        (beat(searches_failed_cycles=3), False, "every search asked failed"),
        (beat(refusing=["team"]), False, "team refused alerts for good"),
        (beat(oldest_owed=format_time(NOW - timedelta(seconds=3599))), True, "cycle 4"),
        (beat(oldest_owed=format_time(NOW - timedelta(seconds=3601))), False, "owed since"),
    ],
)
def test_the_health_verdict(heartbeat: dict[str, object] | None, healthy: bool, says: str) -> None:
    verdict = judge_health(heartbeat, Path("/state/heartbeat.json"), NOW, LIMITS, UTC)
    assert verdict.healthy is healthy
    assert says in verdict.line
    assert verdict.line.startswith("healthy: " if healthy else "unhealthy: ")


def test_the_metrics_port_closes_when_the_run_ends(
    write_config: WriteConfig, standin: StandInServer
) -> None:
    config = load_config(write_config("searches:\n  - name: a\n"))
    server = bind_metrics(0)
    port = server.server_address[1]
    with OpenTrainClient(standin.url) as client, serve_metrics(server, config, client):
        assert healthz(port).status_code == 503  # no cycle yet: no heartbeat
    with pytest.raises(httpx.ConnectError):
        healthz(port)
