"""Operator commands where operators are: no secrets needed, configs found, -c anywhere."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from alertd.cli import cli
from alertd.market import Market
from tests.conftest import ALERTD, RunCli, StartDaemon, WriteConfig, log_until, wait_for

WITH_SECRETS = (
    "channels:\n  tg: tgram://${ALERTD_TEST_TG}/987654321/\n"
    "searches:\n  - name: all\n    notify: [tg, 'json://127.0.0.1:9/${ALERTD_TEST_HOOK}']\n"
)


def test_status_and_health_need_none_of_the_daemons_secrets(
    write_config: WriteConfig, run_cli: RunCli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALERTD_TEST_TG", "123456789:ABCdefGHIjklMNOpqr")
    monkeypatch.setenv("ALERTD_TEST_HOOK", "h00kT0ken99")
    config = write_config(WITH_SECRETS)
    assert run_cli("once", "-c", config).exit_code in (0, 1)  # a state exists now
    monkeypatch.delenv("ALERTD_TEST_TG")
    monkeypatch.delenv("ALERTD_TEST_HOOK")  # as in an operator's shell, not the service's
    status = run_cli("status", "-c", config)
    assert status.exit_code == 0, status.output
    assert status.output.startswith("state: ")
    health = run_cli("health", "-c", config)
    assert health.exit_code == 1 and "heartbeat" in health.output  # no daemon: said so
    validate = run_cli("validate", "-c", config)  # what run needs: the secrets
    assert validate.exit_code == 2 and "variables are not set: ${ALERTD_TEST_TG}" in validate.output


def test_status_says_plainly_when_there_is_no_state(
    write_config: WriteConfig, run_cli: RunCli
) -> None:
    result = run_cli("status", "-c", write_config("searches:\n  - name: all\n"))
    assert result.exit_code == 1
    assert "no state in" in result.output and "has not completed a cycle" in result.output


def test_the_config_is_found_without_c_and_c_works_before_the_command(
    write_config: WriteConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_config("searches:\n  - name: all\n")
    xdg = tmp_path / "xdg"
    (xdg / "alertd").mkdir(parents=True)
    (xdg / "alertd" / "alerts.yaml").write_text(config.read_text())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(xdg))
    monkeypatch.delenv("ALERTD_CONFIG", raising=False)
    found = CliRunner().invoke(cli, ["validate"])  # ./alerts.yaml does not exist here
    assert found.exit_code == 0, found.output
    assert f"(using the config in {xdg / 'alertd' / 'alerts.yaml'})" in found.output
    before = CliRunner().invoke(cli, ["-c", str(config), "validate"])
    assert before.exit_code == 0 and f"{config} is valid" in before.output
    (elsewhere / "alerts.yaml").write_text("searches: [\n")  # ./alerts.yaml comes first
    first = CliRunner().invoke(cli, ["validate"])
    assert first.exit_code == 2 and "alerts.yaml:" in first.output
    os.remove(elsewhere / "alerts.yaml")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "none"))
    nowhere = [Path("alerts.yaml"), tmp_path / "none" / "alerts.yaml", tmp_path / "etc.yaml"]
    monkeypatch.setattr("alertd.cli.config_places", lambda: nowhere)  # this machine's /etc
    missing = CliRunner().invoke(cli, ["validate"])
    assert missing.exit_code == 2 and "alertd init" in missing.output


def test_facets_asks_the_api_the_config_names(
    write_config: WriteConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_config("searches:\n  - name: all\n")
    monkeypatch.chdir(config.parent)  # ./alerts.yaml points at the stand-in
    monkeypatch.delenv("ALERTD_CONFIG", raising=False)
    result = CliRunner().invoke(cli, ["facets"])
    assert result.exit_code == 0, result.output
    assert "categories:" in result.output


def test_the_state_directory_systemd_gives_is_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from alertd.settings import default_state_dir

    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "lib" / "alertd"))
    assert default_state_dir() == tmp_path / "lib" / "alertd"


def test_a_filter_value_in_the_wrong_case_is_caught_online_and_warned_at_start(
    market: Market,
    write_config: WriteConfig,
    run_cli: RunCli,
    start_daemon: StartDaemon,
    tmp_path: Path,
) -> None:
    market.add_job(category="Audio Annotation")
    config = write_config("searches:\n  - name: audio\n    category: audio annotation\n")
    assert run_cli("validate", "-c", config).exit_code == 0  # offline it cannot know
    online = run_cli("validate", "-c", config, "--online")
    assert online.exit_code == 2
    assert "'audio annotation' is not a category on OpenTrain now" in online.output
    assert "did you mean 'Audio Annotation'?" in online.output
    log = log_until(start_daemon, config, tmp_path / "daemon-0.log", "did you mean 'Audio")
    assert "WARNING search 'audio'" in log


def test_validate_online_without_the_api_says_the_offline_checks_passed(
    write_config: WriteConfig, run_cli: RunCli
) -> None:
    config = write_config("api_url: http://127.0.0.1:9\nsearches:\n  - name: all\n")
    result = run_cli("validate", "-c", config, "--online")
    assert result.exit_code == 1
    assert "the offline checks passed, but the facets could not be fetched" in result.output
    assert "tries" not in result.output  # one try: a person is waiting


# -- what a review of the above found ------------------------------------------------


@pytest.mark.slow  # an end-to-end run: .ci/run runs it with -m slow
def test_a_dry_run_beside_a_running_daemon_leaves_its_heartbeat_alone(
    write_config: WriteConfig, start_daemon: StartDaemon, state_dir: Path, tmp_path: Path
) -> None:
    config = write_config("poll_interval: 1h\nsearches:\n  - name: all\n")
    daemon = start_daemon(config)
    beat = state_dir / "heartbeat.json"
    wait_for(beat.exists)
    before = beat.read_bytes()
    dry = subprocess.Popen(
        [*ALERTD, "run", "-c", str(config), "--dry-run"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    time.sleep(2)  # its first cycle has run
    dry.send_signal(signal.SIGTERM)
    dry.wait(timeout=15)
    assert beat.read_bytes() == before  # health still judges the real daemon
    daemon.terminate()
    daemon.wait(timeout=15)


def test_a_json_log_line_masks_secrets_in_a_traceback_too() -> None:
    import io
    import logging

    from alertd.cli import setup_logging

    setup_logging("INFO", frozenset({"SECRETTOKEN123"}), None, "json")
    stream = io.StringIO()
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)
    try:
        raise RuntimeError("posting to hooks.example/SECRETTOKEN123 failed")
    except RuntimeError:
        logging.getLogger("alertd").exception("send failed")
    line = json.loads(stream.getvalue())
    assert "SECRETTOKEN123" not in stream.getvalue() and "hooks.example/***" in line["exception"]


def test_status_without_the_secret_says_why_an_inline_urls_rows_are_unmatched(
    write_config: WriteConfig, run_cli: RunCli, market: Market, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALERTD_TEST_HOOK", "h00kT0ken99")
    config = write_config(
        "searches:\n  - name: all\n    notify: ['json://127.0.0.1:9/${ALERTD_TEST_HOOK}']\n"
    )
    run_cli("once", "-c", config)
    market.add_job(title="Owed to the inline URL")
    run_cli("once", "-c", config)
    monkeypatch.delenv("ALERTD_TEST_HOOK")
    status = run_cli("status", "-c", config)
    assert "an inline URL whose ${VAR} is not set here" in status.output


def test_a_secret_ending_in_a_line_break_is_masked_as_it_is_printed(
    write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    from alertd.config import load_config
    from alertd.targets import RedactingFilter

    monkeypatch.setenv("ALERTD_TEST_TOKEN", "plainword\n")  # a credential file's extra line
    config = load_config(
        write_config(
            "searches:\n  - name: a\n    notify: ['json://127.0.0.1:9/${ALERTD_TEST_TOKEN}']\n"
        )
    )
    (target,) = config.searches[0].targets
    assert "plainword" not in target.label
    assert RedactingFilter(config.secrets).redact("sent to /plainword") == "sent to /***"


def test_health_on_a_directory_given_as_the_config_exits_1_not_2(
    tmp_path: Path, run_cli: RunCli
) -> None:
    folder = tmp_path / "alerts.yaml"  # what Docker makes of a bind mount of a missing file
    folder.mkdir()
    result = run_cli("health", "-c", folder)
    assert result.exit_code == 1 and "Is a directory" in result.output


def test_a_restarted_daemon_is_not_reported_as_the_old_one_stopped(
    write_config: WriteConfig, state_dir: Path
) -> None:
    from alertd.config import load_config
    from alertd.daemon import Daemon
    from alertd.health import HealthLimits, judge_health, process_running, read_heartbeat
    from alertd.pipeline import CycleReport

    config = load_config(write_config("searches:\n  - name: all\n"))
    state_dir.mkdir(parents=True)
    first = Daemon(config, lambda c, fresh: CycleReport())
    first.write_heartbeat(CycleReport())
    first.stop.set()
    first.run()  # stops at once: its heartbeat says "stopped at"
    seen: list[str] = []

    def cycle(current: object, fresh: bool) -> CycleReport:
        path = state_dir / "heartbeat.json"
        limits = HealthLimits(max_age=3600)
        verdict = judge_health(
            read_heartbeat(path), path, datetime.now(UTC), limits, UTC, process_running
        )
        seen.append(verdict.line)
        second.stop.set()
        return CycleReport()

    second = Daemon(config, cycle)
    second.run()
    assert seen and "stopped" not in seen[0], seen


def test_init_says_when_a_file_is_in_the_way_of_the_folder(tmp_path: Path, run_cli: RunCli) -> None:
    (tmp_path / "x.yaml").write_text("a file")
    result = run_cli("init", tmp_path / "x.yaml" / "sub.yaml", "--force")
    assert result.exit_code == 1
    assert "a file is in the way of its folder" in result.output and "--force" not in result.output
