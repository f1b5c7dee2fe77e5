"""A person uses the page in a real (headless) Chromium, and the gate enforces what they chose.

Debian's ``chromium`` and ``chromium-driver`` packages (``.ci/run`` installs them); Selenium drives
them by path, so nothing is downloaded. Screenshots land in the test's ``screenshots`` directory.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from consentgate.api import ApiSettings, issue_token
from consentgate.api.server import ServiceThread
from consentgate.catalog import Catalog
from consentgate.connectors.topics import TopicNames
from consentgate.model import ActivityEvent
from consentgate.settings import Settings
from consentgate.streams.metering import MeteringWorker
from tests.conftest import IN_CI
from tests.helpers import GateThread, produce_events, values, wait_for

GEN, REC = "train_ai_system.generative", "train_ai_system.recommendation"
SECRET = "platform-signing-secret-0123456789abcdef"


def _browser_paths() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    paths = _browser_paths()
    if paths is None:
        if IN_CI:
            pytest.fail("CI must run the browser test: install Debian's chromium and chromium-driver (.ci/run does)")
        pytest.skip("no chromium/chromedriver on PATH (apt-get install chromium chromium-driver)")
    options = Options()
    options.binary_location = paths[0]
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,1000", "--lang=en-US"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=paths[1]), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def shoot(driver: WebDriver, shots: Path, name: str) -> Path:
    """A screenshot of the whole page (the window grows to the page's height first)."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, max(1000, int(height) + 40))
    path = shots / f"{name}.png"
    assert driver.save_screenshot(str(path))
    return path


def switch_state(driver: WebDriver, pair: str) -> str:
    return str(driver.find_element(By.CSS_SELECTOR, f'[data-state="{pair}"]').text)


def act(driver: WebDriver, wait: WebDriverWait, selector: str) -> None:
    """Click ``selector`` and wait until the page has re-rendered from the server's answer."""
    before = driver.find_element(By.TAG_NAME, "body").get_attribute("data-loaded")
    driver.find_element(By.CSS_SELECTOR, selector).click()
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-loaded") != before)


def outcomes(settings: Settings, topics: TopicNames, event_id: str) -> list[tuple[str, str | None]] | None:
    for decision in values(settings, topics.decisions):
        if decision["event_id"] == event_id:
            return [(o["purpose"], o["reason"]) for o in decision["outcomes"]]
    return None


def test_a_person_turns_on_post_for_generative_then_withdraws(
        browser: WebDriver, settings: Settings, topics: TopicNames, catalog: Catalog, tmp_path: Path) -> None:
    shots = tmp_path / "screenshots"
    shots.mkdir()
    config = ApiSettings(port=0, jwt_secret=SECRET)
    pair = f"post/{GEN}"
    wait = WebDriverWait(browser, 60, poll_frequency=0.1, ignored_exceptions=(StaleElementReferenceException,))
    with ServiceThread(settings, config, catalog) as service, GateThread(settings, catalog):
        browser.get(service.url + "/")
        wait.until(lambda d: d.find_element(By.ID, "token").is_displayed())
        assert not browser.find_element(By.ID, "sign-out").is_displayed()
        assert not browser.find_element(By.ID, "signed-in").is_displayed()
        shoot(browser, shots, "1-sign-in")
        browser.find_element(By.ID, "token").send_keys(issue_token(config, "alice"))
        browser.find_element(By.CSS_SELECTOR, "#sign-in button[type=submit]").click()
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-loaded"))
        switch = browser.find_element(By.CSS_SELECTOR, f'[data-pair="{pair}"]')
        assert not switch.is_selected() and switch_state(browser, pair) == "Off"  # off unless turned on
        assert browser.find_element(By.ID, "who-text").text == "Signed in as alice"
        shoot(browser, shots, "2-signed-in-everything-off")

        browser.find_element(By.CSS_SELECTOR, "input[name=tier][value=data_sharing]").click()
        act(browser, wait, "#tier-form button[type=submit]")
        assert browser.find_element(By.ID, "status").text.startswith("Plan saved. Receipt ")
        act(browser, wait, f'[data-pair="{pair}"]')
        assert switch_state(browser, pair) == "On"
        assert browser.find_element(By.ID, "status").text.startswith(
            "Turned on. The AI system may use post data from now on. Receipt ")
        shoot(browser, shots, "3-post-for-generative-on")

        # The page answered once the change was enforceable: a post published now passes for generative
        # and is still dropped for recommendation, which the person did not turn on.
        produce_events(settings, [ActivityEvent("post-1", "alice", "post", datetime.now(timezone.utc), "web",
                                                {"text": "my first post"})])
        wait_for(lambda: outcomes(settings, topics, "post-1") is not None, what="the decision on post-1")
        assert outcomes(settings, topics, "post-1") == [(REC, "no_grant"), (GEN, None)]
        assert [(r["purpose"], r["category"], r["fields"]) for r in values(settings, topics.training[GEN])] == [
            (GEN, "post", {"text": "my first post"})]

        act(browser, wait, f'[data-pair="{pair}"]')
        assert switch_state(browser, pair) == "Off"
        assert browser.find_element(By.ID, "status").text.startswith(
            "Turned off. None of your new post data is used for this from now on. Receipt ")
        rows = browser.find_elements(By.CSS_SELECTOR, "#receipts tbody tr")
        assert [r.find_elements(By.TAG_NAME, "td")[1].text for r in rows] == [
            "Turned off: post for train the generative assistant", "Turned on: post for train the generative assistant",
            "Plan changed: data_sharing (per_unit)"]
        shoot(browser, shots, "4-withdrawn-with-history")

        produce_events(settings, [ActivityEvent("post-2", "alice", "post", datetime.now(timezone.utc), "web",
                                                {"text": "my second post"})])
        wait_for(lambda: outcomes(settings, topics, "post-2") is not None, what="the decision on post-2")
        assert outcomes(settings, topics, "post-2") == [(REC, "no_grant"), (GEN, "no_grant")]
        assert len(values(settings, topics.training[GEN])) == 1

        # What the post earned, as the metering worker valued it, on the person's page.
        MeteringWorker(settings, catalog).run(idle_exit_s=1.5)
        browser.refresh()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#earnings tbody tr td:nth-child(4)"))
        row = [td.text for td in browser.find_elements(By.CSS_SELECTOR, "#earnings tbody tr td")]
        assert row[1:4] == ["Train the generative assistant", "post", "1"]
        assert browser.find_elements(By.CSS_SELECTOR, "#chart svg rect")
        shoot(browser, shots, "5-earnings-and-history")

        browser.find_element(By.ID, "sign-out").click()  # a change too: it spends the page's CSRF token
        wait.until(lambda d: d.find_element(By.ID, "token").is_displayed())
        browser.refresh()  # the session is gone on the server, not only hidden on the page
        wait.until(lambda d: d.find_element(By.ID, "token").is_displayed())
        assert not browser.find_element(By.ID, "signed-in").is_displayed()

    assert sorted(p.name for p in shots.iterdir()) == [
        "1-sign-in.png", "2-signed-in-everything-off.png", "3-post-for-generative-on.png",
        "4-withdrawn-with-history.png", "5-earnings-and-history.png"]
