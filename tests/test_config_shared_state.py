"""Two config files may share a state directory, but not a search name.

Sharing one used to be silent: each run took the search over and primed it again, so
neither file's alerts were ever sent. Now the second file is refused with one line
naming both files and the search; a search whose owner file is gone, or no longer
names it, is still handed over.
"""

from __future__ import annotations

import signal
from pathlib import Path

from alertd.market import Market
from tests.conftest import RunCli, StartDaemon, WriteConfig, wait_for
from tests.webhook import WebhookCollector


def search(name: str, webhook: WebhookCollector, language: str = "Spanish") -> str:
    return f"  - name: {name}\n    language: {language}\n    notify: '{webhook.url}'\n"


def test_a_second_config_with_the_same_search_name_is_refused(
    market: Market, write_config: WriteConfig, run_cli: RunCli, webhook: WebhookCollector
) -> None:
    first = write_config("searches:\n" + search("spanish", webhook), name="first.yaml")
    second = write_config(
        "searches:\n" + search("mine", webhook, "German") + search("spanish", webhook),
        name="second.yaml",
    )
    assert run_cli("once", "-c", first).exit_code == 0
    for args in (["once"], ["once", "--dry-run"], ["run"]):
        result = run_cli(*args, "-c", second)
        assert result.exit_code == 2, result.output
        errors = [line for line in result.output.splitlines() if "Error" in line]
        assert (
            result.output.splitlines()[-1:]
            == errors
            == [
                f"Error: {second}:9: searches[1].name: search 'spanish' is also a search of "
                f"{first.resolve()}, which shares the state directory {first.parent / 'state'}; "
                "a state directory holds each search name once: rename it in one of the two "
                "files, or give one of them its own state_dir"
            ]
        )
    for number in range(4):  # the first file's alerts all arrive
        market.add_job(title=f"Spanish {number}", languages=["Spanish"])
        assert run_cli("once", "-c", first).exit_code == 0
        assert run_cli("once", "-c", second).exit_code == 2
    assert len(webhook.received) == 4


def test_a_search_the_other_file_gave_up_is_handed_over(
    market: Market, write_config: WriteConfig, run_cli: RunCli, webhook: WebhookCollector
) -> None:
    first = write_config("searches:\n" + search("spanish", webhook), name="first.yaml")
    second = write_config("searches:\n" + search("spanish", webhook), name="second.yaml")
    assert run_cli("once", "-c", first).exit_code == 0
    first.write_text(first.read_text().replace("name: spanish", "name: other"))
    assert run_cli("once", "-c", second).exit_code == 0
    market.add_job(title="Spanish after", languages=["Spanish"])
    assert run_cli("once", "-c", second).exit_code == 0
    assert [str(m["title"]) for m in webhook.received] == ["New OpenTrain job: Spanish after"]

    third = write_config("searches:\n" + search("spanish", webhook), name="third.yaml")
    second.unlink()  # moved away: its searches go to whoever names them
    assert run_cli("once", "-c", third).exit_code == 0


def test_sighup_bringing_a_clash_keeps_the_running_config(
    market: Market,
    write_config: WriteConfig,
    run_cli: RunCli,
    webhook: WebhookCollector,
    start_daemon: StartDaemon,
    tmp_path: Path,
) -> None:
    other = write_config("searches:\n" + search("spanish", webhook), name="other.yaml")
    assert run_cli("once", "-c", other).exit_code == 0
    config = write_config(
        "poll_interval: 0.3\nsearches:\n" + search("german", webhook, "German"),
        name="alerts.yaml",
    )
    log = tmp_path / "daemon-0.log"
    proc = start_daemon(config)
    wait_for(lambda: "cycle 1 " in log.read_text())
    config.write_text(config.read_text() + search("spanish", webhook))
    proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "config reload refused" in log.read_text())
    market.add_job(title="German while refused", languages=["German"])
    wait_for(lambda: len(webhook.received) == 1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    text = log.read_text()
    assert text.count("config reload refused") == 1
    assert f"search 'spanish' is also a search of {other.resolve()}" in text
    assert "Traceback" not in text
