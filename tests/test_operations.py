"""Operations: `alertd init` starts a config from the example shipped in the package,
`alertd standin` serves a simulated API to try it on, and `alertd health` answers only
0 or 1, as Docker's HEALTHCHECK needs (it reserves 2)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest

from alertd.scaffold import example_config
from tests.conftest import ALERTD, RunCli, WriteConfig

PLACEHOLDERS = {
    "SLACK_WEBHOOK": "T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ",
    "TELEGRAM_BOT_TOKEN": "123456789:ABCdefGhIJKlmnOPqrSTUvwxYZ",
    "SMTP_PASSWORD": "placeholder-value",
    "DISCORD_WEBHOOK": "4174216298/JHMHI8qBe7bk2ZwO5U711o3dV_js",
}


def test_init_writes_the_commented_example_that_validates(
    tmp_path: Path, run_cli: RunCli, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in PLACEHOLDERS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    result = run_cli("init")
    assert result.exit_code == 0, result.output
    written = (tmp_path / "alerts.yaml").read_text(encoding="utf-8")
    assert written == example_config()
    assert written.startswith("# alertd example config")
    assert "alertd validate -c alerts.yaml --online" in result.output
    checked = run_cli("validate", "-c", "alerts.yaml")
    assert checked.exit_code == 0, checked.output


def test_init_never_overwrites_a_config_without_force(tmp_path: Path, run_cli: RunCli) -> None:
    mine = tmp_path / "etc" / "alerts.yaml"
    mine.parent.mkdir()
    mine.write_text("searches: []  # mine\n")
    refused = run_cli("init", mine)
    assert refused.exit_code == 1
    assert f"{mine} exists" in refused.output and "--force" in refused.output
    assert mine.read_text() == "searches: []  # mine\n"
    forced = run_cli("init", mine, "--force")
    assert forced.exit_code == 0
    assert mine.read_text() == example_config()


def test_init_dash_writes_to_standard_output(run_cli: RunCli) -> None:
    result = run_cli("init", "-")
    assert result.exit_code == 0
    assert result.output == example_config()


def test_init_makes_the_folder(tmp_path: Path, run_cli: RunCli) -> None:
    result = run_cli("init", tmp_path / "new" / "alerts.yaml")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "new" / "alerts.yaml").read_text() == example_config()


def test_the_example_ships_inside_the_package() -> None:
    # Read the way an installed wheel reads it (importlib.resources), not from the tree.
    packaged = example_config()
    top = (Path(__file__).parent.parent / "alerts.example.yaml").read_text(encoding="utf-8")
    assert packaged == top
    assert "searches:" in packaged


def test_health_exits_1_not_2_on_a_config_error(tmp_path: Path, run_cli: RunCli) -> None:
    broken = tmp_path / "alerts.yaml"
    broken.write_text("poll_interval: often\n")
    result = run_cli("health", "-c", broken)
    assert result.exit_code == 1
    assert result.output.startswith("unhealthy: config error: ")
    assert "poll_interval" in result.output
    missing = run_cli("health", "-c", tmp_path / "nope.yaml")
    assert missing.exit_code == 1


def test_health_exits_1_without_a_heartbeat(write_config: WriteConfig, run_cli: RunCli) -> None:
    config = write_config("searches:\n  - name: a\n")
    result = run_cli("health", "-c", config)
    assert result.exit_code == 1
    assert result.output.startswith("unhealthy: no heartbeat")


def test_standin_serves_jobs_until_stopped() -> None:
    proc = subprocess.Popen(
        [*ALERTD, "standin", "--port", "0", "--jobs", "3"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert "stand-in OpenTrain API on http://127.0.0.1:" in line
        url = line.split(" on ")[1].split()[0]
        jobs = httpx.get(f"{url}/jobs", timeout=5).json()
        assert len(jobs["jobs"]) == 3
    finally:
        proc.terminate()
        assert proc.wait(timeout=5) == 0
