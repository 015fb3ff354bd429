"""A TZ that cannot be used is one line saying what to do, for every command.

The C library reads TZ before alertd runs a line; ``TZ=UTC+24`` (a whole day west)
is one Python cannot represent, and importing apprise used to end in a traceback.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ALERTD, StartDaemon, WriteConfig, wait_for

SCRIPT = Path(sys.executable).parent / "alertd"  # the installed console script


def alertd(*args: str, tz: str, command: list[str] = ALERTD) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TZ": tz}
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=60, env=env)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "alerts.yaml"
    path.write_text(f"state_dir: {tmp_path / 'state'}\nsearches:\n  - name: a\n")
    return path


BAD = ["UTC+24", "UTC-25", "Europe/Berln", "Foo/Bar", "/etc/passwd", "AAA-23:30BBB"]


@pytest.mark.parametrize("tz", BAD)
def test_a_bad_tz_is_one_line_and_exit_2_even_for_version(tz: str) -> None:
    result = alertd("--version", tz=tz)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"Error: environment variable TZ={tz} is not a usable time zone")
    assert "set TZ to an IANA name such as Europe/Berlin" in line


@pytest.mark.parametrize(
    "args", [["validate"], ["status"], ["once", "--dry-run"], ["run"], ["preview", "a"]]
)
def test_every_command_says_the_same_line(args: list[str], config: Path) -> None:
    result = alertd(*args, "-c", str(config), tz="UTC+24")
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1 and "TZ=UTC+24" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_installed_script_says_it_too(config: Path) -> None:
    if not SCRIPT.exists():
        pytest.skip("no console script in this environment")
    result = alertd("--version", tz="UTC+24", command=[str(SCRIPT)])
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1


def test_health_says_unhealthy_and_exits_1_as_a_health_check_must(config: Path) -> None:
    result = alertd("-c", str(config), "health", tz="UTC+24")
    assert result.returncode == 1
    assert result.stdout.startswith("unhealthy: environment variable TZ=UTC+24")
    assert result.stderr == ""


@pytest.mark.parametrize(
    "tz", ["", "UTC", "Europe/Berlin", ":Europe/Berlin", "UTC+3", "EST5EDT", "JST-9"]
)
def test_a_usable_tz_changes_nothing(tz: str) -> None:
    result = alertd("--version", tz=tz)
    assert result.returncode == 0 and "alertd, version" in result.stdout


@pytest.mark.parametrize(
    ("setting", "env"), [("timezone: UTC+24\n", {}), ("", {"ALERTD_TIMEZONE": "Mars/Olympus"})]
)
def test_a_bad_timezone_setting_is_one_line_and_exit_2(
    setting: str, env: dict[str, str], tmp_path: Path
) -> None:
    path = tmp_path / "alerts.yaml"
    path.write_text(f"state_dir: {tmp_path}\n{setting}searches:\n  - name: a\n")
    for command in ("validate", "once"):
        result = subprocess.run(
            [*ALERTD, command, "-c", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, **env},
        )
        assert result.returncode == 2
        (line,) = result.stderr.splitlines()
        assert "timezone: unknown time zone" in line and "use an IANA name" in line


def test_a_reload_keeps_showing_times_in_the_machines_zone(
    write_config: WriteConfig,
    start_daemon: StartDaemon,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TZ", "Asia/Tokyo")  # no timezone: in the file: the machine's zone
    config = write_config("poll_interval: 0.3\nsearches:\n  - name: a\n")
    log = tmp_path / "daemon-0.log"
    proc = start_daemon(config)
    wait_for(lambda: "cycle 1 " in log.read_text())
    config.write_text(config.read_text() + "  - name: b\n")
    proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "config reloaded" in log.read_text())
    time.sleep(1.0)  # a few cycles after the reload
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    after = log.read_text().split("config reloaded", 1)[1].splitlines()[1:]
    stamps = [line.split(" ", 1)[0] for line in after if line[:4].isdigit()]
    assert stamps and all(stamp.endswith("+0900") for stamp in stamps), stamps


@pytest.mark.parametrize(
    ("tz", "offset"),
    [("JST-9", "+0900"), ("UTC+3", "-0300"), ("<+0530>-5:30", "+0530"), ("Asia/Tokyo", "+0900")],
)
def test_the_machines_zone_is_the_one_tz_names(tz: str, offset: str) -> None:
    shown = subprocess.run(
        [
            sys.executable,
            "-c",
            "from alertd.zones import local_zone; from datetime import "
            "datetime; print(datetime.now(local_zone()).strftime('%z'))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "TZ": tz},
        check=True,
    )
    assert shown.stdout.strip() == offset
