"""``include:``: searches spread over many files, one config, mistakes named where they are."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from alertd.config import load_config
from alertd.errors import ConfigError
from alertd.market import Market
from tests.conftest import RunCli, WriteConfig
from tests.webhook import WebhookCollector


def write(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return path


def error_of(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return caught.value


def test_searches_from_two_files_alert_through_the_main_files_channel(
    market: Market,
    write_config: WriteConfig,
    run_cli: RunCli,
    webhook: WebhookCollector,
    tmp_path: Path,
) -> None:
    config = write_config(
        f"""\
        include: members/*.yaml
        channels:
          team: '{webhook.url}'
        searches:
          - name: audio
            category: Audio Annotation
            notify: [team]
        """
    )
    write(tmp_path / "members" / "bob.yaml", "searches:\n  - name: bob-rlhf\n    q: rlhf\n")
    write(
        tmp_path / "members" / "ann.yaml",
        "searches:\n  - name: ann-spanish\n    language: Spanish\n    notify: team\n",
    )
    loaded = load_config(config)
    assert [s.name for s in loaded.searches] == ["audio", "ann-spanish", "bob-rlhf"]
    assert {s.source for s in loaded.searches} == {str(config.resolve())}
    assert loaded.searches[1].file == str(tmp_path / "members" / "ann.yaml")
    assert loaded.searches[1].line == 2

    market.add_job(title="Old Spanish job", languages=["Spanish"])
    assert run_cli("once", "-c", config).exit_code == 0  # primes every search silently
    assert webhook.received == []
    market.add_job(title="Audio job", category="Audio Annotation")
    market.add_job(title="Spanish job", languages=["Spanish"])
    assert run_cli("once", "-c", config).exit_code == 0
    assert sorted(str(m["title"]) for m in webhook.received) == [
        "New OpenTrain job: Audio job",
        "New OpenTrain job: Spanish job",
    ]


def test_a_name_clash_across_files_names_both(write_config: WriteConfig, tmp_path: Path) -> None:
    config = write_config("include: [members/*.yaml]\nsearches:\n  - name: x\n  - name: audio\n")
    bob = write(tmp_path / "members" / "bob.yaml", "searches:\n  - q: a\n    name: audio\n")
    err = error_of(config)
    assert err.describe() == (
        f"{bob}:3: searches[0].name: duplicate search name 'audio' (also in {config}:8)"
    )


def test_a_mistake_in_an_included_file_names_that_file_and_line(
    write_config: WriteConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_config("include: members/*.yaml\nchannels:\n  team-slack: 'json://127.0.0.1/'\n")
    bob = tmp_path / "members" / "bob.yaml"
    write(bob, "searches:\n  - name: a\n\n    payType: HOURLY\n")
    err = error_of(config)
    assert (err.source, err.line, err.field) == (str(bob), 4, "searches[0].payType")

    write(bob, "searches:\n  - name: a\n    notify: [team-slak]\n")
    err = error_of(config)
    assert (err.source, err.line) == (str(bob), 3)
    assert "did you mean 'team-slack'" in err.message

    write(bob, "searches:\n  - name: a\n    q: x\n  q: [unclosed\n")
    assert error_of(config).source == str(bob)

    monkeypatch.delenv("BOB_HOOK", raising=False)
    write(bob, "searches:\n  - name: a\n    notify: ['json://${BOB_HOOK}']\n")
    allowing = "include: {files: members/*.yaml, variables: [BOB_HOOK]}\n"
    config.write_text(config.read_text().replace("include: members/*.yaml\n", allowing))
    err = error_of(config)
    assert (err.source, err.line) == (str(bob), 3)
    assert "BOB_HOOK is not set" in err.message

    monkeypatch.setenv("BOB_HOOK", "127.0.0.1/bobs-secret-path")
    assert "127.0.0.1/bobs-secret-path" in load_config(config).secrets


def test_an_included_file_may_hold_only_searches(write_config: WriteConfig, tmp_path: Path) -> None:
    config = write_config("include: members/*.yaml\n")
    bob = write(tmp_path / "members" / "bob.yaml", "searches: []\npoll_interval: 5\n")
    err = error_of(config)
    assert err.describe().startswith(
        f"{bob}:2: poll_interval: an included file may hold only 'searches:'"
    )
    write(bob, "- name: a\n")
    assert error_of(config).source == str(bob)


def test_a_pattern_matching_nothing_is_fine_but_a_non_string_is_not(
    write_config: WriteConfig, tmp_path: Path, run_cli: RunCli
) -> None:
    config = write_config("include: [nobody-yet/*.yaml]\nsearches:\n  - name: a\n")
    result = run_cli("validate", "-c", config)
    assert result.exit_code == 0, result.output
    assert "1 search" in result.output

    beside = write_config("include: '*.yaml'\nsearches:\n  - name: a\n")  # matches itself
    assert [s.name for s in load_config(beside).searches] == ["a"]

    config = write_config("searches:\n  - name: a\ninclude:\n  - members/*.yaml\n  - 3\n")
    err = error_of(config)
    assert (err.line, err.field) == (9, "include[1]")


def test_validate_online_names_the_included_file_and_line(
    market: Market, write_config: WriteConfig, run_cli: RunCli, tmp_path: Path
) -> None:
    market.add_job(category="Audio Annotation")
    config = write_config("include: members/*.yaml\nsearches:\n  - name: a\n")
    bob = write(tmp_path / "members" / "bob.yaml", "searches:\n  - name: b\n    category: Audi\n")
    result = run_cli("validate", "-c", config, "--online")
    assert result.exit_code == 2
    assert f"{bob}:3: searches[0].category: 'Audi' is not a category on OpenTrain now" in (
        result.output
    )
