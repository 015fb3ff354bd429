"""A member's paths through the page in a real headless browser (Debian's chromium with
Selenium): sign up, confirm by the mail's button, edit, pause, unsubscribe, leave.
Skipped where chromium or its driver is not installed (``tests/browser.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from alertd.market import Market
from alertd.standin import StandInServer
from tests.browser import By, Select, heading, needs_browser, wait_for
from tests.pageworld import PUBLIC, PageWorld, link_in, page_world

pytestmark = needs_browser


@pytest.fixture
def world(market: Market, standin: StandInServer, state_dir: Path) -> Iterator[PageWorld]:
    for _ in range(2):
        market.add_job(category="Audio Transcription", title="Spanish audio transcription")
    with page_world(standin, state_dir) as world:
        yield world


def test_sign_up_confirm_edit_pause_and_unsubscribe_in_a_browser(
    browser: object, world: PageWorld
) -> None:
    driver = browser
    base = world.server.url
    driver.get(f"{base}/")  # type: ignore[attr-defined]
    find = driver.find_element  # type: ignore[attr-defined]
    Select(find(By.ID, "category")).select_by_value("Audio Transcription")
    find(By.CSS_SELECTOR, "button[value=count]").click()
    wait_for(driver, lambda d: d.find_elements(By.ID, "count"))
    assert "2 open jobs match now" in find(By.ID, "count").text
    find(By.ID, "q").send_keys("spanish")
    find(By.ID, "email").send_keys("ana@example.org")
    find(By.CSS_SELECTOR, "button[value=signup]").click()
    wait_for(driver, heading("Check your mail"))
    assert "Check your mail" in find(By.TAG_NAME, "h1").text
    script = "return [document.documentElement.scrollWidth, window.innerWidth]"
    width, screen = driver.execute_script(script)  # type: ignore[attr-defined]
    assert screen == 390 and width <= screen  # nothing wider than the phone

    link = link_in(world.mails_to("ana@example.org")[0])
    driver.get(base + link[len(PUBLIC) :])  # type: ignore[attr-defined]
    assert world.members.active() == []
    find(By.ID, "confirm").click()
    wait_for(driver, heading("Your job alerts"))
    assert "Your job alerts" in find(By.TAG_NAME, "h1").text
    [(member, search)] = world.members.active()
    assert (member.email, search.q, search.category) == (
        "ana@example.org",
        "spanish",
        "Audio Transcription",
    )

    find(By.LINK_TEXT, "Edit").click()
    keywords = find(By.ID, "q")
    keywords.clear()
    keywords.send_keys("german")
    find(By.CSS_SELECTOR, "input[name=pace][value=daily]").click()
    Select(find(By.NAME, "digest_hour")).select_by_value("7")
    find(By.CSS_SELECTOR, "button[type=submit]").click()
    wait_for(driver, heading("Your job alerts"))
    edited = world.members.search(search.id)
    assert edited is not None and (edited.q, edited.pace, edited.digest_hour) == (
        "german",
        "daily",
        7,
    )

    find(By.XPATH, "//button[text()='Pause']").click()
    wait_for(driver, lambda d: "(paused)" in d.find_element(By.CLASS_NAME, "searches").text)
    assert "(paused)" in find(By.CLASS_NAME, "searches").text
    assert world.members.active() == []
    find(By.XPATH, "//button[text()='Resume']").click()
    wait_for(driver, lambda d: d.find_elements(By.XPATH, "//button[text()='Pause']"))
    assert len(world.members.active()) == 1

    unsubscribe = world.members.unsubscribe_url(search.id, PUBLIC)
    driver.get(base + unsubscribe[len(PUBLIC) :])  # type: ignore[attr-defined]
    assert len(world.members.active()) == 1  # opening the link changes nothing
    find(By.ID, "unsubscribe").click()
    wait_for(driver, heading("Unsubscribed"))
    assert "Unsubscribed" in find(By.TAG_NAME, "h1").text
    assert world.members.active() == []
