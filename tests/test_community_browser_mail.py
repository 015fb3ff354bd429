"""A member's whole way through alertd in a real headless browser (Debian's chromium with
Selenium), with real mail: sign up on the page, the confirmation arrives at a local SMTP
server (aiosmtpd), its link opened in the browser and confirmed by the button; a job
published on the stand-in API and a cycle bring an alert mail with the RFC 8058 headers;
an edit on the manage page changes what the next alert holds; the one-click POST a
mailbox provider sends stops the mails. A feed member reads their Atom feed with
feedparser, and a repeat is a 304. Skipped where chromium or its driver is not installed
(``tests/browser.py``)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import feedparser
import httpx
import pytest

from alertd.config import Config
from alertd.market import Market
from alertd.standin import StandInServer
from tests.browser import By, WebDriver, heading, needs_browser, wait_for
from tests.pageworld import PageWorld, link_in, member_config, member_cycle, page_world
from tests.servers import ReceivedMail

pytestmark = needs_browser

PUBLIC = "https://alerts.example.org"  # behind a TLS reverse proxy, as a host runs it
ANA = "ana@example.org"


@pytest.fixture
def world(market: Market, standin: StandInServer, state_dir: Path) -> Iterator[PageWorld]:
    market.add_job(title="Spanish audio transcription, already open")  # older than sign-up
    with page_world(standin, state_dir, public_url=PUBLIC) as world:
        yield world


def local(world: PageWorld, link: str) -> str:
    """A link from a mail or a page, as the address the browser reaches it at."""
    assert link.startswith(f"{PUBLIC}/"), link
    return world.server.url + link[len(PUBLIC) :]


def manage_link(mail: ReceivedMail) -> str:
    """The "Manage your alerts" link of an alert mail."""
    html = "\n".join(mail.text_parts())
    found = re.search(r'href="([^"]+)">Manage your alerts<', html)
    assert found, html
    return found.group(1)


def alerts_to(world: PageWorld, address: str, count: int, wait: float = 5.0) -> list[str]:
    """The text of the alert mails (not the confirmation) sent to ``address``."""
    mails = world.mails_to(address, count=count + 1, wait=wait)[1:]
    return ["\n".join(mail.text_parts()) for mail in mails]


def sign_up_by_mail(driver: WebDriver, world: PageWorld, q: str, address: str) -> None:
    """Fill in the form, then open the confirmation mail's link and press its button."""
    driver.get(f"{world.server.url}/")
    driver.find_element(By.ID, "q").send_keys(q)
    driver.find_element(By.ID, "email").send_keys(address)
    driver.find_element(By.CSS_SELECTOR, "button[value=signup]").click()
    wait_for(driver, heading("Check your mail"))
    [confirmation] = world.mails_to(address)
    driver.get(local(world, link_in(confirmation)))
    assert world.members.active() == []  # opening the link confirms nothing
    driver.find_element(By.ID, "confirm").click()
    wait_for(driver, heading("Your job alerts"))


def sign_up_for_a_feed(driver: WebDriver, world: PageWorld, q: str) -> str:
    """A feed member's sign-up; returns their feed's link as their manage page shows it."""
    driver.get(f"{world.server.url}/")
    driver.find_element(By.ID, "q").send_keys(q)
    driver.find_element(By.CSS_SELECTOR, "input[name=delivery][value=feed]").click()
    driver.find_element(By.CSS_SELECTOR, "button[value=signup]").click()
    wait_for(driver, heading("Your job alerts"))
    return str(driver.find_element(By.ID, "feed").get_attribute("href"))


def edit_keywords(driver: WebDriver, world: PageWorld, manage: str, q: str) -> None:
    """From the manage page (reached by the mail's link), change a search's keywords."""
    driver.get(local(world, manage))
    driver.find_element(By.LINK_TEXT, "Edit").click()
    wait_for(driver, heading("Edit a search"))
    keywords = driver.find_element(By.ID, "q")
    keywords.clear()
    keywords.send_keys(q)
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait_for(driver, heading("Your job alerts"))


def one_click(world: PageWorld, mail: ReceivedMail) -> httpx.Response:
    """What a mailbox provider does with the List-Unsubscribe headers (RFC 8058): a POST
    of ``List-Unsubscribe=One-Click`` to the header's URL, with no cookie."""
    assert mail.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    header = str(mail.message["List-Unsubscribe"]).strip()  # folded: RFC 2369 allows it
    found = re.fullmatch(r"<(https://[^>]+)>", header)
    assert found, header
    with httpx.Client(follow_redirects=False, timeout=10) as provider:
        return provider.post(
            local(world, found.group(1)),
            content=b"List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )


def cycle(world: PageWorld, config: Config, market: Market, *titles: str) -> None:
    """Publish jobs with ``titles`` on the stand-in, then run one cycle."""
    for title in titles:
        market.add_job(title=title)
    member_cycle(world, config)


def test_sign_up_confirm_alert_edit_and_one_click_unsubscribe_with_real_mail(
    browser: WebDriver, world: PageWorld, market: Market
) -> None:
    driver = browser
    sign_up_by_mail(driver, world, "spanish", ANA)
    feed = sign_up_for_a_feed(driver, world, "audio")
    config = member_config(world)
    cycle(world, config, market)  # new searches start silent: the open job is not sent
    cycle(world, config, market, "Spanish audio transcription")
    [alert] = world.mails_to(ANA, count=2)[1:]
    assert "Spanish audio transcription" in "\n".join(alert.text_parts())
    assert "already open" not in "\n".join(alert.text_parts())
    assert str(alert.message["List-Id"]).endswith(".alerts.example.org>")

    edit_keywords(driver, world, manage_link(alert), "german")
    cycle(world, config, market)  # the edited search starts silent too
    cycle(world, config, market, "German audio transcription", "Spanish audio subtitles")
    [_, edited] = alerts_to(world, ANA, count=2)
    assert "German audio transcription" in edited
    assert "Spanish audio subtitles" not in edited  # the next alert follows the edit

    answer = one_click(world, world.mails_to(ANA, count=3)[2])
    assert answer.status_code == 200 and "location" not in answer.headers
    cycle(world, config, market, "German audio annotation")
    assert len(alerts_to(world, ANA, count=3, wait=0.5)) == 2  # no more mail

    # The cycle did run: the feed member's feed has every audio job since their sign-up.
    with httpx.Client(timeout=10) as reader:
        atom = reader.get(local(world, feed))
        again = reader.get(local(world, feed), headers={"If-None-Match": atom.headers["ETag"]})
    parsed = feedparser.parse(atom.content)
    assert atom.status_code == 200 and not parsed.bozo, parsed.get("bozo_exception")
    assert {entry.title for entry in parsed.entries} >= {
        "Spanish audio transcription",
        "German audio transcription",
        "Spanish audio subtitles",
        "German audio annotation",
    }
    assert again.status_code == 304 and again.content == b""
