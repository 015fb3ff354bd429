"""Loading a config with thousands of generic webhooks on one endpoint asks apprise once
per endpoint, not once per URL: the URLs differ only in a plain path, which apprise
keeps as written. What a URL's label, its secrets and its errors are stays exactly what
apprise says of that URL alone (the differential test below)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import alertd.targets
from alertd.config import load_config
from alertd.errors import ConfigError
from alertd.targets import check_url, redact_url, url_secrets

ENDPOINTS = [
    "json://relay.example.com",
    "jsons://relay.example.com:8443",
    "json://bot:s3cretPassw0rd@relay.example.com",
    "jsons://hooks.example.net",
    "xml://127.0.0.1:9",
    "forms://user@forms.example.org",
]
PATHS = ["/s00001", "/s00002", "/hook/AbC-123_x", "/a/b.c/~d", "/T0kenAbcdef1234567890", "/x"]
QUERIES = ["", "?method=PUT", "?+X-Token=abcdEFGH1234&-key=v", "?:field=value&method=GET"]
# Not the plain-path shape: each is instantiated on its own, as before.
ODD = [
    "json://relay.example.com/",
    "json://relay.example.com/a//b",
    "json://relay.example.com/a/../b",
    "json://relay.example.com/a%20b",
    "json://relay.example.com/.hidden",
    "json://relay.example.com/x#frag",
    "JSON://relay.example.com/x",
]


@pytest.fixture(autouse=True)
def fresh_cache() -> Iterator[None]:
    alertd.targets._privacy_form.cache_clear()
    alertd.targets._webhook_forms.clear()
    yield
    alertd.targets._privacy_form.cache_clear()
    alertd.targets._webhook_forms.clear()


def all_urls() -> list[str]:
    urls = [e + p + q for e in ENDPOINTS for q in QUERIES for p in PATHS]
    return urls + ODD + ["json://relay.example.com/x?method=FETCH", "json://:99999/x"]


def test_every_webhook_prints_and_checks_as_apprise_says_of_it_alone() -> None:
    urls = all_urls()
    shared = {url: (check_url(url), redact_url(url), url_secrets(url)) for url in urls}
    alone = {}
    for url in urls:  # each with nothing remembered: apprise instantiates this URL itself
        alertd.targets._privacy_form.cache_clear()
        alertd.targets._webhook_forms.clear()
        alone[url] = (check_url(url), redact_url(url), url_secrets(url))
    assert shared == alone
    assert check_url("json://relay.example.com/x?method=FETCH") is not None
    assert "bot:s3cretPassw0rd" not in " ".join(label for _, label, _ in shared.values())


def counting(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    real = alertd.targets._instantiated_form

    def instantiate(url: str) -> Any:
        seen.append(url)
        return real(url)

    monkeypatch.setattr(alertd.targets, "_instantiated_form", instantiate)
    return seen


def config_with(tmp_path: Path, urls: list[str]) -> Path:
    searches = "".join(f"  - name: s{i}\n    notify: ['{url}']\n" for i, url in enumerate(urls))
    path = tmp_path / "alerts.yaml"
    path.write_text(f"state_dir: {tmp_path / 'state'}\nsearches:\n{searches}", encoding="utf-8")
    return path


def test_a_thousand_webhooks_on_one_endpoint_ask_apprise_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = counting(monkeypatch)
    urls = [f"json://relay.example.com/member/{i:04d}?method=PUT" for i in range(1000)]
    config = load_config(config_with(tmp_path, urls))
    labels = [t.label for s in config.searches for t in s.targets]
    assert labels == [url.partition("?")[0] for url in urls]
    assert len(seen) == 1


def test_a_url_apprise_cannot_use_is_named_among_good_ones_on_its_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = counting(monkeypatch)
    good = [f"json://relay.example.com/m{i}" for i in range(3)]
    bad = "json://relay.example.com/m9?method=FETCH"
    with pytest.raises(ConfigError) as caught:
        load_config(config_with(tmp_path, [*good, bad]))
    assert ":10: searches[3].notify[0]: apprise cannot use" in str(caught.value)
    assert len(seen) == 2  # the good endpoint once, the bad URL itself


def test_building_a_config_leaves_the_cycle_collector_alone_until_done(tmp_path: Path) -> None:
    urls = [f"json://relay.example.com/m{i}" for i in range(2000)]
    path = config_with(tmp_path, urls)
    collections: list[int] = []

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collections.append(info["generation"])

    gc.collect()  # the counts other tests left behind decide which pass comes due next
    gc.callbacks.append(count)
    try:
        load_config(path)
        # 2,000 searches: at most the one young pass due when the collector is back on
        assert len(collections) <= 1 and 2 not in collections, collections
        assert gc.isenabled()
        gc.disable()  # a caller that turned it off finds it off
        load_config(path)
        assert not gc.isenabled()
    finally:
        gc.enable()
        gc.callbacks.remove(count)
