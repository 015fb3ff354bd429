"""`alertd validate` loads what checking a config needs and nothing else: the daemon,
the API client (httpx and its async backends), the senders, the metrics server and the
community page are a third of its start at 10,000 searches, and it uses none of them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import WriteConfig

NOT_NEEDED = (
    "httpx",
    "httpcore",
    "prometheus_client",
    "flask",
    "alertd.api",
    "alertd.daemon",
    "alertd.deliver",
    "alertd.metrics",
    "alertd.pipeline",
    "alertd.standin",
)
PROBE = """
import sys
from alertd.cli import cli
try:
    cli(["validate", "-c", sys.argv[1]])
except SystemExit as exc:
    print("exit", exc.code, file=sys.stderr)
print("loaded:", *sorted(set(sys.argv[2:]) & set(sys.modules)))
"""


def validate_loads(config: Path) -> tuple[list[str], str]:
    """The modules of ``NOT_NEEDED`` loaded once `alertd validate` is done, and its output."""
    result = subprocess.run(
        [sys.executable, "-c", PROBE, str(config), *NOT_NEEDED],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout.splitlines()[-1].startswith("loaded:"), result.stderr[-2000:]
    return result.stdout.splitlines()[-1].split()[1:], result.stdout


def test_validate_loads_no_daemon_client_or_web_module(write_config: WriteConfig) -> None:
    config = write_config(
        """
        searches:
          - name: audio
            category: Audio Annotation
            notify: ["json://127.0.0.1:9/hook"]
        """
    )
    loaded, out = validate_loads(config)
    assert "is valid: 1 searches, 1 targets" in out
    assert loaded == []
