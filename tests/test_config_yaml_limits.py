"""Every YAML file alertd reads is bounded: its size, and how far its aliases expand.

A few hundred bytes of nested aliases ("billion laughs") would otherwise become billions
of values once ``${VAR}`` and validation walk them: one line and exit 2 instead, at once,
and a daemon asked to reload such a file keeps its config and keeps answering.
"""

from __future__ import annotations

import itertools
import resource
import signal
import subprocess
import time
from pathlib import Path

import pytest

from alertd.config import load_config, parse_config
from alertd.errors import ConfigError
from alertd.market import Market
from tests.conftest import ALERTD, StartDaemon, WriteConfig, wait_for
from tests.webhook import WebhookCollector

LETTERS = "abcdefghi"


def bomb_lines() -> list[str]:
    """Nine lists of nine, each of the one before: 9**9 values once expanded."""
    lines = ["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for before, name in itertools.pairwise(LETTERS):
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{before}"] * 9) + "]")
    return lines


def included_bomb() -> str:
    """The same bomb where an included file may put it: in its searches."""
    lines = ["searches:"]
    for line in bomb_lines():
        name, value = line.split(": ", 1)
        lines += [f"  - name: {name}", f"    exclude: {value}"]
    return "\n".join(lines) + "\n"


def limited_memory() -> None:  # on a build without the bound, fail instead of eating the host
    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))


def validate(config: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = subprocess.run(
        [*ALERTD, "validate", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=limited_memory,
    )
    return result, time.monotonic() - started


def test_an_alias_bomb_in_the_main_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    text = "\n".join(bomb_lines()) + "\nsearches: []\n"
    assert len(text.encode()) < 460
    config = tmp_path / "alerts.yaml"
    config.write_text(text, encoding="utf-8")

    started = time.monotonic()
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    assert time.monotonic() - started < 1.0
    assert caught.value.source == str(config)
    assert caught.value.line == 6  # the first list past the bound: f, 9**6 values
    assert "aliases (*name) expand" in caught.value.message

    result, _ = validate(config)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"Error: {caught.value.describe()}"]


def test_an_alias_bomb_in_an_included_file_is_one_line_and_exit_2(
    write_config: WriteConfig, tmp_path: Path
) -> None:
    config = write_config("include: members/*.yaml\nsearches:\n  - name: audio\n")
    member = tmp_path / "members" / "mallory.yaml"
    member.parent.mkdir()
    member.write_text(included_bomb(), encoding="utf-8")

    result, seconds = validate(config)
    assert result.returncode == 2, result.stderr[-500:]
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"Error: {member}:") and "aliases (*name) expand" in line
    assert seconds < 20  # a second of work; the rest is starting Python on a busy machine


def test_an_alias_inside_itself_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("a: &a [x, *a]\nsearches: []\n", "self.yaml")
    assert caught.value.line == 1 and "repeats forever" in caught.value.message


def test_aliases_that_repeat_a_little_are_still_fine() -> None:
    text = "searches:\n  - {<<: &d {category: Audio Annotation, language: Spanish}, name: s0}\n"
    text += "".join(f"  - {{<<: *d, name: s{i}}}\n" for i in range(1, 3000))
    config = parse_config(text, "ok.yaml")
    assert len(config.searches) == 3000
    assert {s.language for s in config.searches} == {"Spanish"}


def test_a_file_larger_than_the_bound_is_refused_unread(tmp_path: Path) -> None:
    config = tmp_path / "alerts.yaml"
    with config.open("w", encoding="utf-8") as file:
        file.write("searches: []\n")
        file.write("# padding\n" * (8 * 1024 * 1024 // 10 + 1))
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    assert caught.value.source == str(config) and "larger than 8 MB" in caught.value.message


def test_sighup_with_a_bomb_keeps_the_old_config_and_answers(
    market: Market,
    write_config: WriteConfig,
    webhook: WebhookCollector,
    start_daemon: StartDaemon,
    tmp_path: Path,
) -> None:
    config = write_config(
        f"""\
        poll_interval: 0.3
        include: members/*.yaml
        searches:
          - name: audio
            category: Audio Annotation
            notify: '{webhook.url}'
        """
    )
    log = tmp_path / "daemon-0.log"
    proc = start_daemon(config)
    wait_for(lambda: "cycle 1 " in log.read_text())
    member = tmp_path / "members" / "mallory.yaml"
    member.parent.mkdir()
    member.write_text(included_bomb(), encoding="utf-8")
    proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "config reload refused" in log.read_text())
    market.add_job(title="Audio after the bomb", category="Audio Annotation")
    wait_for(lambda: len(webhook.received) == 1)
    for command, status in (("health", 1), ("status", 2)):  # the file on disk is wrong
        answer = subprocess.run(
            [*ALERTD, command, "-c", str(config)], capture_output=True, text=True, timeout=60
        )
        assert answer.returncode == status, (command, answer.stdout, answer.stderr)
        assert len((answer.stdout + answer.stderr).splitlines()) == 1
        assert f"{member}:" in answer.stdout + answer.stderr
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    text = log.read_text()
    assert text.count("config reload refused") == 1
    assert f"config reload refused: {member}:" in text and "Traceback" not in text
