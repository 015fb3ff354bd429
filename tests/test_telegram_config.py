"""``community.telegram``: its token is a secret (from the environment, never echoed,
masked in logs), its Bot API address defaults to Telegram's; ``alertd validate``
checks both with file, line and field, and ``alertd init`` shows them commented."""

from __future__ import annotations

import pytest

from alertd.community.config import TELEGRAM_API
from alertd.config import parse_config
from alertd.errors import ConfigError
from alertd.scaffold import example_config

BASE = "community:\n  name: Guild\n  public_url: https://alerts.example.org\n  telegram:\n"
TOKEN = "123456789:AAE-real-looking_token-0123456789ab"


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "alerts.yaml")
    return caught.value.describe()


def test_the_token_comes_from_the_environment_and_is_masked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GUILD_BOT", TOKEN)
    config = parse_config(BASE + "    token: ${GUILD_BOT}\n", "alerts.yaml")
    assert config.community is not None and config.community.telegram is not None
    assert config.community.telegram.token == TOKEN
    assert config.community.telegram.api_url == TELEGRAM_API
    assert TOKEN in config.secrets  # the log masks it
    assert TOKEN not in repr(config.community)


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (
            "    token: not-a-token-but-a-secret-anyway\n",
            "alerts.yaml:5: community.telegram.token: is not a bot token as @BotFather gives it",
        ),
        (
            f"    token: '{TOKEN}'\n    api_url: ftp://example.org\n",
            "alerts.yaml:6: community.telegram.api_url: 'ftp://example.org' is not an http(s) URL",
        ),
        (
            f"    token: '{TOKEN}'\n    api_uri: https://example.org\n",
            "community.telegram.api_uri: unknown key 'api_uri' — did you mean 'api_url'?",
        ),
        ("    api_url: https://example.org\n", "community.telegram.token"),
    ],
)
def test_validate_says_what_is_wrong_and_never_echoes_the_token(lines: str, expected: str) -> None:
    described = error_of(BASE + lines)
    assert expected in described
    assert "not-a-token-but-a-secret-anyway" not in described


def test_init_shows_the_bot_commented_and_the_example_stays_valid() -> None:
    example = example_config()
    assert "#     telegram:" in example and "#       token: ${COMMUNITY_BOT_TOKEN}" in example
    uncommented = (
        BASE + "    token: ${COMMUNITY_BOT_TOKEN}\n    api_url: https://api.telegram.org\n"
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("COMMUNITY_BOT_TOKEN", TOKEN)
        assert parse_config(uncommented, "alerts.yaml").community is not None
