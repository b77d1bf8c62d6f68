"""The operator console in a real headless Chromium (Selenium), against a
real `smsbulk api`, worker, sandbox and Valkey (docs/INTERFACE.md, "The
console"): what an operator does, found the way the contract says a person
finds it (a password field, the job id in full, a progress bar, buttons by
their text). Every page is screenshot into the test's folder; JavaScript
errors fail the test; the token is never in a URL, a cookie, local storage
or the API's log.

Needs Debian's ``chromium`` and ``chromium-driver`` (``apt-get install -y
chromium chromium-driver``) and ``selenium`` (in the dev extra); skipped,
saying so, when the browser is missing.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.integration.stack import Stack, make_stack, ro_numbers
from tests.producer.api.test_app import TOKEN, call
from worker.dev.launcher import start_api, wait_until

pytestmark = pytest.mark.integration

INSTALL = (
    "the console's browser tests need Chromium and its driver: "
    "apt-get install -y chromium chromium-driver (and pip install -e '.[dev]' for selenium)"
)
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
DRIVERS = ("chromedriver", "/usr/lib/chromium/chromedriver")
# The job's account sends 20 recipients a second (requests of 5, 4 a
# second), so a job of 200 takes about 10 s: long enough to watch its bar
# move, pause it and resume it.
SLOW = {"messages_per_second": 20, "requests_per_second": 4, "batch_size": 5}
RECIPIENTS = 200
INVALID = ["12", "999"]  # refused by the workers: the job's errors
WAIT_S = 30


def _found(names: tuple[str, ...]) -> str | None:
    for name in names:
        path = shutil.which(name) or (name if os.access(name, os.X_OK) else None)
        if path:
            return path
    return None


@pytest.fixture(scope="module")
def chromium() -> tuple[str, str]:
    browser, driver = _found(BROWSERS), _found(DRIVERS)
    if browser is None or driver is None:
        pytest.skip(INSTALL)
    pytest.importorskip("selenium", reason=INSTALL)
    return browser, driver


@pytest.fixture(scope="module")
def stack(
    chromium: tuple[str, str], valkey: object, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    url = valkey.connection_url  # type: ignore[attr-defined]
    redis.Redis.from_url(url).flushall()
    built = make_stack(url, tmp_path_factory.mktemp("console"), accounts={"slow": SLOW})
    try:
        yield built
    finally:
        built.stop()


@pytest.fixture(scope="module")
def console_url(stack: Stack) -> Iterator[str]:
    process, port = start_api(stack.env, stack.log_dir, TOKEN)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.stop()
    assert TOKEN not in process.output()  # the API never logs it


class Browser:
    """A headless Chromium through Selenium, and the checks every step makes."""

    def __init__(self, chromium: tuple[str, str], downloads: Path, shots: Path) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = chromium[0]
        for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
            options.add_argument(argument)
        options.add_argument("--window-size=1280,1000")
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(options=options, service=Service(chromium[1]))
        self.driver.execute_cdp_cmd(
            "Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
        )
        self.downloads = downloads
        self.shots = shots
        self.urls: list[str] = []

    def find(self, css: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, css)

    def all(self, css: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        return list(self.driver.find_elements(By.CSS_SELECTOR, css))

    def xpath(self, path: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        return list(self.driver.find_elements(By.XPATH, path))

    def button(self, name: str) -> Any:
        """A visible button named ``name`` by its text, aria-label or title."""
        found = [
            b
            for b in self.all("button")
            if b.is_displayed()
            and name in (b.text.strip(), b.get_attribute("aria-label"), b.get_attribute("title"))
        ]
        assert found, f"no button {name!r}"
        return found[0]

    def link(self, name: str) -> Any:
        found = [a for a in self.all("a, button") if a.is_displayed() and a.text.strip() == name]
        assert found, f"no link or button {name!r}"
        return found[0]

    def until(self, condition: Callable[[], Any], what: str, timeout_s: float = WAIT_S) -> Any:
        from selenium.common.exceptions import StaleElementReferenceException

        seen: list[Any] = []

        def holds() -> bool:
            try:
                seen[:] = [condition()]  # called once a try: a condition may click
            except StaleElementReferenceException:  # a poll redrew the table meanwhile
                return False
            return bool(seen[0])

        wait_until(holds, timeout_s, what, interval_s=0.1)
        return seen[0]

    def shot(self, name: str) -> None:
        self.driver.save_screenshot(str(self.shots / f"{name}.png"))
        self.check()

    def check(self) -> None:
        """No JavaScript error so far; the token in no URL, cookie or local storage."""
        entries = self.driver.get_log("browser")
        # The network entries are the API's expected answers (the 401 of a wrong token).
        errors = [e for e in entries if e["level"] == "SEVERE" and e.get("source") != "network"]
        assert errors == [], errors
        self.urls.append(self.driver.current_url)
        assert all(TOKEN not in url for url in self.urls)
        assert self.driver.get_cookies() == []
        assert self.driver.execute_script("return window.localStorage.length") == 0

    def quit(self) -> None:
        self.driver.quit()


@pytest.fixture
def browser(chromium: tuple[str, str], tmp_path: Path) -> Iterator[Browser]:
    (tmp_path / "downloads").mkdir()
    opened = Browser(chromium, tmp_path / "downloads", tmp_path)
    try:
        yield opened
    finally:
        opened.quit()
    if target := os.environ.get("SMSBULK_CONSOLE_SHOTS"):  # docs/console: the README's pictures
        for shot in tmp_path.glob("*.png"):
            shutil.copy(shot, Path(target) / shot.name)


def sign_in(browser: Browser, url: str, token: str) -> None:
    browser.driver.get(url)
    field = browser.until(lambda: _shown(browser.find("input[type=password]")), "the prompt")
    field.send_keys(token)
    browser.button("Sign in").click()


def _shown(element: Any) -> Any:
    return element if element.is_displayed() else None


def test_a_wrong_token_shows_the_prompt_again_with_a_message(
    browser: Browser, console_url: str
) -> None:
    sign_in(browser, console_url, "not-the-token-" + "x" * 32)
    message = browser.until(
        lambda: browser.find("#login-message").text, "a message on the token prompt"
    )
    assert "refused" in message
    assert browser.find("input[type=password]").is_displayed()
    assert not browser.find("#nav").is_displayed()
    browser.shot("login-refused")
    assert browser.driver.execute_script("return window.sessionStorage.length") == 0


def _row(browser: Browser, job_id: str) -> Any:
    rows = [r for r in browser.all("#jobs-table tbody tr") if job_id in r.text]
    return rows[0] if rows else None


def _cells(browser: Browser, job_id: str) -> list[str]:
    row = _row(browser, job_id)
    return [td.text for td in row.find_elements("css selector", "td")] if row else []


def _open(browser: Browser, job_id: str) -> bool:
    row = _row(browser, job_id)
    if row is None:
        return False
    row.find_element("css selector", "a").click()
    return True


def _progress(browser: Browser, job_id: str) -> float:
    row = _row(browser, job_id)
    return float(row.find_element("css selector", "progress").get_attribute("value")) if row else -1


def test_an_operator_follows_pauses_resumes_and_reads_a_job(
    browser: Browser, console_url: str, stack: Stack, tmp_path: Path
) -> None:
    started = time.monotonic()
    sign_in(browser, console_url, TOKEN)
    browser.until(lambda: _shown(browser.find("#view-jobs")), "the jobs view")
    assert browser.driver.execute_script("return window.sessionStorage.length") == 1

    numbers = ro_numbers(RECIPIENTS - len(INVALID)) + INVALID
    job = {
        "job_id": "console-reminders-2026-12-02",
        "provider": "slow",
        "text": "Your appointment is tomorrow at 10:00.",
        "messages": [{"to": n, "ref": f"order-{i}"} for i, n in enumerate(numbers)],
    }
    port = int(console_url.rsplit(":", 1)[1])
    submitted = call(port, "POST", "/v1/jobs", job)
    assert submitted.status == 202, submitted.body
    job_id = job["job_id"]

    # The list shows the job's id in full, and its bar moves.
    browser.until(lambda: _progress(browser, job_id) > 0, "the job's bar to start")
    first = _progress(browser, job_id)
    browser.until(lambda: _progress(browser, job_id) > first, "the job's bar to advance")
    # (Every read of a row is one condition: each poll redraws the table.)
    browser.until(
        lambda: _cells(browser, job_id)[:2] in ([job_id, "queued"], [job_id, "running"]),
        "the job's id in full and its state",
    )
    browser.shot("jobs")

    # The job: pause, see paused; resume; see it complete.
    browser.until(lambda: _open(browser, job_id), "a click on the job's id")
    browser.until(lambda: browser.find("#job-id").text == job_id, "the job view")
    browser.until(lambda: browser.find("#job-state").text == "running", "the job to run")
    browser.button("Pause").click()
    browser.until(lambda: browser.find("#job-state").text == "paused", "paused to show")
    assert browser.button("Resume").is_enabled() and not browser.button("Pause").is_enabled()
    browser.shot("job-paused")
    browser.button("Resume").click()
    browser.until(
        lambda: browser.find("#job-state").text in ("queued", "running", "completed"),
        "the resumed state",
    )
    browser.until(lambda: browser.find("#job-state").text == "completed", "the job to complete", 90)
    browser.until(
        lambda: (
            browser.find("#job-counts [data-status=accepted]").text
            == f"{RECIPIENTS - len(INVALID)}"
        ),
        "the final counts",
    )
    assert browser.find("#job-counts [data-status=pending]").text == "0"
    assert browser.find("#job-percent").text.startswith("100%")

    # Its chart and its errors.
    browser.until(
        lambda: len(browser.find("#chart polyline").get_attribute("points").split()) >= 3,
        "the chart's line",
    )
    browser.until(
        lambda: (
            [r.text for r in browser.all("#job-errors tbody tr")]
            == ["— not a valid phone number for region RO 2 rejected 2"]
        ),
        "the errors: the two invalid numbers",
    )
    browser.shot("job")

    # A stale page's Pause (here: enabled by hand) gets a readable 409.
    pause = browser.button("Pause")
    browser.driver.execute_script("arguments[0].disabled = false; arguments[0].click()", pause)
    notice = browser.until(lambda: browser.find("#notice").text, "the 409 message")
    assert "(409)" in notice and "completed" in notice

    # Results as CSV, downloaded through the API with the token.
    browser.button("Download CSV").click()
    saved = browser.downloads / f"{job_id}.csv"
    browser.until(saved.exists, "the CSV download")
    browser.until(lambda: len(saved.read_text().splitlines()) == RECIPIENTS + 1, "the whole CSV")
    rows = list(csv.DictReader(io.StringIO(saved.read_text())))
    assert [r["ref"] for r in rows] == [f"order-{i}" for i in range(RECIPIENTS)]
    assert {r["status"] for r in rows} == {"accepted", "rejected"}

    # Accounts: the job's account with its limits.
    browser.link("Accounts").click()
    browser.until(
        lambda: any(
            "of 20" in text and "sendbulk" in text
            for text in (r.text for r in browser.all("#accounts-table tbody tr[data-account=slow]"))
        ),
        "the job's account against its limit",
    )
    browser.shot("accounts")

    # Opt-outs: add one, see it, remove it.
    browser.link("Opt-outs").click()
    browser.until(lambda: _shown(browser.find("#optout-number")), "the opt-outs view")
    browser.find("#optout-number").send_keys("0712 345 678")
    browser.find("#optout-region").send_keys("RO")
    browser.button("Add").click()
    browser.until(lambda: browser.all("#optouts-table tr[data-number='+40712345678']"), "it listed")
    browser.until(lambda: browser.find("#optout-count").text == "1", "the count")
    browser.shot("optouts")
    browser.until(lambda: browser.button("Remove").click() or True, "a click on Remove")
    browser.until(lambda: browser.find("#optout-count").text == "0", "it removed")
    assert browser.all("#optouts-table tbody tr") == []
    browser.check()

    # A job that does not exist: a readable 404.
    browser.driver.get(f"{console_url}/#job/no-such-job")
    notice = browser.until(lambda: browser.find("#notice").text, "the 404 message")
    assert "Not found (404)" in notice and "no such job" in notice
    browser.check()
    print(f"console browser flow: {time.monotonic() - started:.1f} s")
