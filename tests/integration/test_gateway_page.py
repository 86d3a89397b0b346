"""The gateway's page (`GET /`) in a real headless Chromium, driven with selenium.

Needs Debian's chromium and chromium-driver (`make test-tools` installs them); skips, saying
which is missing, where they are not installed. Takes a screenshot of the finished event:
into the test's temporary folder, or with ``AGENTFLOW_SAVE_SCREENSHOTS=1`` onto
docs/img/gateway-page.png (the README's), so that a test run leaves the work tree clean.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.integration.gateway_server import ALL_KEY

pytestmark = pytest.mark.integration
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOT = ROOT / "docs" / "img" / "gateway-page.png"


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[object]:
    """A headless Chromium with a fresh profile."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (make test-tools; Debian: apt-get "
                    "install chromium chromium-driver)")  # fmt: skip
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--window-size=1280,860",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def test_the_page_streams_tokens_tool_rows_and_the_result_and_cancels(
    gateway, start_worker, browser, tmp_path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.select import Select
    from selenium.webdriver.support.ui import WebDriverWait

    start_worker(concurrency=8)
    driver = browser
    wait = WebDriverWait(driver, 90)
    driver.get(gateway.url + "/")
    driver.find_element(By.ID, "key").send_keys(ALL_KEY)
    driver.find_element(By.ID, "load").click()
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#agent option[value=narrator]")))
    Select(driver.find_element(By.ID, "agent")).select_by_value("narrator")

    def send(data: dict) -> None:
        box = driver.find_element(By.ID, "data")
        box.clear()
        box.send_keys(json.dumps(data))
        driver.find_element(By.ID, "send").click()

    def status() -> str:
        return str(driver.find_element(By.ID, "status").get_attribute("data-state"))

    send({"tools": 3, "seconds": 0.3, "words": 8,
          "intro": "Checking three sources in parallel. "})  # fmt: skip
    wait.until(lambda d: status() in ("succeeded", "failed", "cancelled", "error"))
    assert status() == "succeeded"
    tokens = driver.find_element(By.ID, "tokens").text
    assert tokens.startswith("Checking three sources in parallel.")
    assert tokens.rstrip().endswith("w0 w1 w2 w3 w4 w5 w6 w7")
    rows = driver.find_elements(By.CSS_SELECTOR, "#tools tbody tr")
    assert [r.get_attribute("data-state") for r in rows] == ["done"] * 3
    assert all(r.find_element(By.CLASS_NAME, "name").text == "sleep" for r in rows)
    assert json.loads(driver.find_element(By.ID, "result").text) == {
        "answer": "w0 w1 w2 w3 w4 w5 w6 w7", "tools": 3}  # fmt: skip
    assert driver.find_element(By.ID, "cancel").get_attribute("disabled") is not None
    shot = SCREENSHOT if os.environ.get("AGENTFLOW_SAVE_SCREENSHOTS") else tmp_path / "page.png"
    assert driver.save_screenshot(str(shot))

    # A long event: its tool rows show running, then the cancel button ends it.
    send({"tools": 2, "seconds": 60})
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR,
                                             "#tools tr[data-state=running]")) == 2)  # fmt: skip
    driver.find_element(By.ID, "cancel").click()
    wait.until(lambda d: status() in ("cancelled", "failed", "error", "succeeded"))
    assert status() == "cancelled"
    assert not driver.find_elements(By.CSS_SELECTOR, "#tools tr[data-state=done]")

    # The key stays in the tab's sessionStorage: a reload keeps it and lists the agents.
    driver.refresh()
    assert driver.find_element(By.ID, "key").get_attribute("value") == ALL_KEY
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#agent option[value=echo]")))


def test_the_page_shows_a_refused_key(gateway, browser) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(gateway.url + "/")
    browser.find_element(By.ID, "key").send_keys("wrong")
    browser.find_element(By.ID, "load").click()
    WebDriverWait(browser, 60).until(
        lambda d: d.find_element(By.ID, "status").get_attribute("data-state") == "error"
    )
    assert browser.find_element(By.ID, "status").text.startswith("401")
