"""The log an operator reads, or a collector parses: one line per event, said right."""

from __future__ import annotations

import json
from pathlib import Path

from alertd.config import load_config
from alertd.market import Market
from tests.conftest import RunCli, StartDaemon, WriteConfig, log_until
from tests.webhook import WebhookCollector


def test_a_failed_send_is_one_line_and_apprise_says_nothing_at_info(
    market: Market, write_config: WriteConfig, run_cli: RunCli
) -> None:
    config = write_config(
        "searches:\n  - name: all\n    notify: ['json://127.0.0.1:9/nothing-listens']\n"
    )
    run_cli("once", "-c", config)
    market.add_job(title="Owed")
    result = run_cli("once", "-c", config)
    lines = result.output.strip().splitlines()
    assert len([line for line in lines if "Connection error" in line]) == 1
    assert not [line for line in lines if "Notifying" in line or "Sent JSON" in line]
    assert lines[-1].split(" ", 2)[2].startswith("cycle: 1 search, ")  # one line per cycle


def test_log_format_json_is_one_object_per_line_with_the_cycles_numbers(
    market: Market, write_config: WriteConfig, run_cli: RunCli, webhook: WebhookCollector
) -> None:
    config = write_config(f"searches:\n  - name: all\n    notify: ['{webhook.url}']\n")
    run_cli("once", "-c", config)
    market.add_job(title="Counted")
    result = run_cli("once", "-c", config, "--log-format", "json")
    lines = [json.loads(line) for line in result.output.strip().splitlines()]
    cycle = lines[-1]
    assert cycle["level"] == "INFO" and cycle["message"].startswith("cycle: 1 search, ")
    assert (cycle["alerts_sent"], cycle["owed"], cycle["searches"]) == (1, 0, 1)


def test_log_times_are_in_the_configs_zone_like_next_poll(
    write_config: WriteConfig, run_cli: RunCli
) -> None:
    config = write_config("timezone: Asia/Tokyo\nsearches:\n  - name: all\n")
    result = run_cli("once", "-c", config)
    assert all(line.split(" ", 1)[0].endswith("+0900") for line in result.output.splitlines())


def test_a_list_channels_targets_are_named_by_their_service(write_config: WriteConfig) -> None:
    config = load_config(
        write_config(
            "channels:\n  everywhere:\n    - discord://1234567890/abcdefTOKENxyz123456\n"
            "    - json://127.0.0.1:9/a\n    - json://127.0.0.1:9/b\n"
            "searches:\n  - name: all\n    notify: [everywhere]\n"
        )
    )
    labels = [t.label for t in config.searches[0].targets]
    assert labels == ["everywhere: discord", "everywhere: json #1", "everywhere: json #2"]


def test_the_start_line_names_the_api_the_config_and_the_state(
    write_config: WriteConfig, start_daemon: StartDaemon, tmp_path: Path, state_dir: Path
) -> None:
    config = write_config("poll_interval: 90\nsearches:\n  - name: all\n")
    log = log_until(start_daemon, config, tmp_path / "daemon-0.log", "running:")
    start = next(line for line in log.splitlines() if "running:" in line)
    api = load_config(config).api_url
    assert "1 search, polling every 1 min 30 s;" in start
    assert f"API {api}, config {config}, state {state_dir}" in start


def test_the_daemons_start_says_when_a_full_refresh_takes_longer_than_refresh_interval(
    write_config: WriteConfig, start_daemon: StartDaemon, tmp_path: Path
) -> None:
    body = "requests_per_minute: 60\nrefresh_interval: 1m\npoll_interval: 1h\nsearches:\n"
    body += "".join(f"  - name: s{i}\n    q: word{i}\n" for i in range(90))
    log = log_until(start_daemon, write_config(body), tmp_path / "daemon-0.log", "running:")
    (line,) = [line for line in log.splitlines() if "a full refresh" in line]
    assert " WARNING " in line
    assert "90 distinct queries at 60/min: a full refresh (and a first start) takes 2 min" in line
