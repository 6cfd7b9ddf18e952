"""The guard console (/console) in a real browser: Debian's chromium driven by its chromedriver.

Selenium is given both paths, so it never looks for (or downloads) a driver or a browser of its own.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from conftest import ADMIN_KEY, REPO
from live_server import live_service

CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM = Path("/usr/bin/chromium")
ADMIN = {"X-API-Key": ADMIN_KEY}

needs_browser = pytest.mark.skipif(
    not (CHROMEDRIVER.is_file() and CHROMIUM.is_file()),
    reason=f"the console's browser tests need Debian's chromium and chromium-driver ({CHROMIUM}, {CHROMEDRIVER}): "
           "apt-get install chromium chromium-driver (.ci/run does)")


@pytest.fixture
def browser() -> Iterator[object]:
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium (the test extras) is not installed")
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_MANAGER"] = "false"  # Selenium Manager never runs: both paths are given
    profile = tempfile.mkdtemp(prefix="gatewatch-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1600,1100", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})  # every URL the page requests
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _wait(driver, seconds: float, predicate):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, seconds, poll_frequency=0.05).until(lambda d: predicate(d))


def _css(driver, selector: str):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def _log_in(driver, base: str, key: str) -> None:
    driver.get(f"{base}/console")
    _css(driver, "#key")[0].send_keys(key)
    _css(driver, "#login")[0].click()
    _wait(driver, 10, lambda d: _css(d, "#live.on"))  # the page and its live stream are up


def _visited_urls(driver) -> list[str]:
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


@needs_browser
def test_guard_logs_in_sees_live_alerts_and_acts_on_them(tmp_path: Path, analyzer, browser) -> None:
    driver = browser
    with live_service(tmp_path / "data", analyzer) as base, httpx.Client(base_url=base, timeout=10) as api:
        guard = api.post("/api/v1/keys", headers=ADMIN, json={"role": "guard", "label": "north desk"}).json()["key"]
        integration = api.post("/api/v1/keys", headers=ADMIN, json={"role": "integration"}).json()["key"]

        _log_in(driver, base, guard)
        cookies = {c["name"]: c for c in driver.get_cookies()}
        assert list(cookies) == ["gatewatch_console"]
        session = cookies["gatewatch_console"]
        assert session["httpOnly"] is True and session["sameSite"] == "Strict"
        assert guard not in session["value"]
        assert driver.execute_script("return document.cookie") == ""  # HttpOnly: out of the page's reach

        # The 1 s is the push, measured once the page's stream is open (not the browser's start).
        _wait(driver, 15.0, lambda d: "on" in d.find_element("id", "live").get_attribute("class").split())
        raised = api.post("/api/v1/alerts", headers={"X-API-Key": integration},
                          json={"kind": "smoke", "source": {"type": "sensor", "id": "s1"},
                                "message": "smoke in 3-1"})
        assert raised.status_code == 201, raised.text
        alert_id = raised.json()["id"]
        card = f"#alert-{alert_id}"
        _wait(driver, 1.0, lambda d: _css(d, card))  # pushed by the stream: no reload
        assert "smoke in 3-1" in _css(driver, card)[0].text

        # the cookie alone changes nothing: a POST also needs the session's CSRF token
        jar = {"gatewatch_console": session["value"]}
        forged = httpx.post(f"{base}/api/v1/alerts/{alert_id}/ack", cookies=jar, json={})
        assert forged.status_code == 403, forged.text
        assert httpx.get(f"{base}/api/v1/alerts/{alert_id}", cookies=jar).json()["status"] == "new"

        _css(driver, f"{card} input.note")[0].send_keys("on my way")
        _css(driver, f"{card} button.ack")[0].click()
        _wait(driver, 5, lambda d: _css(d, f"{card}.status-acknowledged"))
        _css(driver, f"{card} input.note")[0].send_keys("false alarm: steam from the kitchen")
        _css(driver, f"{card} button.resolve")[0].click()
        _wait(driver, 5, lambda d: not _css(d, card))  # resolved alerts leave the open list
        row = f'#history tr[data-id="{alert_id}"]'
        _wait(driver, 5, lambda d: _css(d, row) and "resolved" in _css(d, row)[0].text)

        alert = api.get(f"/api/v1/alerts/{alert_id}", headers=ADMIN).json()
        assert alert["status"] == "resolved"
        assert alert["acked_by"]["label"] == "north desk" and alert["ack_note"] == "on my way"
        assert alert["resolved_by"]["label"] == "north desk"
        assert alert["resolve_note"] == "false alarm: steam from the kitchen"

        visited = [*_visited_urls(driver), driver.current_url]
        assert any("/api/v1/alerts/stream" in u for u in visited)
        assert not [u for u in visited if guard in u], "the key travelled in a URL"

        # logging out ends the session on the server too
        _css(driver, ".logout button")[0].click()
        _wait(driver, 5, lambda d: _css(d, "#key"))
        assert httpx.get(f"{base}/api/v1/alerts", cookies=jar).status_code == 401


def test_console_refuses_other_keys_and_foreign_posts(tmp_path: Path, analyzer) -> None:
    with live_service(tmp_path / "data", analyzer) as base, httpx.Client(base_url=base, timeout=10) as api:
        integration = api.post("/api/v1/keys", headers=ADMIN, json={"role": "integration"}).json()["key"]
        assert api.post("/console/login", data={"key": integration}).status_code == 403
        assert api.post("/console/login", data={"key": "not-a-key"}).status_code == 401
        foreign = api.post("/console/login", data={"key": ADMIN_KEY}, headers={"Origin": "http://evil.example"})
        assert foreign.status_code == 403 and "set-cookie" not in foreign.headers
        page = api.get("/console")
        assert page.status_code == 200 and 'name="key"' in page.text  # the login form
        assert not [p for p in api.get("/openapi.json").json()["paths"] if p.startswith("/console")]
        logged_in = api.post("/console/login", data={"key": ADMIN_KEY})
        assert logged_in.status_code == 303 and ADMIN_KEY not in logged_in.headers["location"]
        cookie = logged_in.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and ADMIN_KEY.lower() not in cookie
        assert api.get("/api/v1/alerts").status_code == 200  # the cookie works for reads
        assert api.post("/api/v1/alerts/1/ack", json={}).status_code == 403  # not for writes without CSRF
        assert api.post("/api/v1/alerts/1/ack", headers=ADMIN, json={}).status_code == 404  # keys: unchanged


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", "not a PNG"
    return struct.unpack(">II", data[16:24])


def _trajectory_picture(path: Path) -> None:
    """A facade with a thrown object's arc drawn over it, like the camera thread's evidence."""
    image = np.full((540, 720, 3), (70, 64, 58), np.uint8)
    for floor in range(18):
        for column in range(8):
            x, y = 40 + column * 82, 20 + floor * 28
            cv2.rectangle(image, (x, y), (x + 50, y + 18), (120, 150, 170), -1)
    points = [(40 + 3 * 82 + 25 + 6 * t, int(20 + 2 * 28 + 0.9 * t * t)) for t in range(22)]
    cv2.polylines(image, [np.array(points, np.int32)], False, (0, 0, 255), 3)
    cv2.circle(image, points[0], 9, (0, 255, 255), 2)
    cv2.putText(image, "floor 17, column 4", (points[0][0] + 14, points[0][1]), cv2.FONT_HERSHEY_SIMPLEX, 0.7,
                (255, 255, 255), 2)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)


@needs_browser
def test_console_screenshot_with_throw_and_camera_offline(tmp_path: Path, analyzer, browser) -> None:
    from gates.alerts import AlertStore, NewAlert, Source, camera_offline_alert
    from gates.gallery import DB_NAME
    from gates.service_store import ServiceStore

    driver, data = browser, tmp_path / "data"
    with live_service(data, analyzer) as base, httpx.Client(base_url=base, timeout=10) as api:
        guard = api.post("/api/v1/keys", headers=ADMIN, json={"role": "guard", "label": "north desk"}).json()["key"]
        picture = data / "evidence" / "throw-1.png"
        _trajectory_picture(picture)
        now = datetime.now(UTC)
        store, alerts = ServiceStore(data / DB_NAME, analyzer.model_id), AlertStore(data / DB_NAME)
        try:
            throw = store.record_throw(at=now, released_at=now - timedelta(seconds=2), camera_id="facade-1", floor=17,
                                       column=4, confidence=0.93, image_path=str(picture), clip_path=None,
                                       detail={"floor_sigma": 0.4, "column_sigma": 0.3})
            offline = store.record_camera_event(at=now, camera_id="gate-north", gate_id=None, type="camera_offline",
                                                reason="no frames for 10 s")
            alerts.raise_alert(camera_offline_alert("gate-north", "no frames for 10 s", offline.id))
            thrown = alerts.raise_alert(NewAlert("throw", Source("camera", "facade-1"),
                                                 "object thrown from floor 17, column 4", throw_id=throw.id)).alert
        finally:
            store.close()
            alerts.close()

        _log_in(driver, base, guard)
        card = f"#alert-{thrown.id}"
        _wait(driver, 5, lambda d: _css(d, card) and _css(d, ".alert[data-kind=camera_offline]"))
        image = f"{card} img.trajectory-img"
        _wait(driver, 5, lambda d: d.execute_script(
            "const i = document.querySelector(arguments[0]); return i && i.complete && i.naturalWidth > 0", image))
        assert driver.execute_script("return document.querySelector(arguments[0]).naturalWidth", image) == 720
        page = _css(driver, "#alerts")[0].text
        assert "object thrown from floor 17, column 4" in page and "gate-north went dark" in page
        assert "sev-critical" in _css(driver, card)[0].get_attribute("class")

        shot = tmp_path / "console.png"
        assert driver.save_screenshot(str(shot))
        png = shot.read_bytes()
        width, height = _png_size(png)
        assert width >= 1200 and height >= 700 and len(png) > 20_000
        assert cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR) is not None
        docs = REPO / "docs"
        docs.mkdir(exist_ok=True)
        shutil.copyfile(shot, docs / "console.png")  # the README's picture of the console
        driver.get("about:blank")  # closes the page's event stream before the service stops
