"""The web page in a real headless browser (Debian's chromium through selenium) against a real `tuner serve`
(the API and a worker on the embedded broker) with keys and URL signing on: enter the key when asked, upload the shipped
sample, see the progress reach 100 %, zoom into the viewer and check that the zoomed view was rendered at
screen resolution (not stretched), read the blob's and JPEG's, WebP's and AVIF's bytes and PSNRs at the same
bytes and show one beside the render, delete the image from the gallery; no console errors.

Screenshots go to TUNER_SCREENSHOTS when it is set (docs/screenshots holds the committed ones)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import httpx
import pytest
from test_service_e2e import FAST, Proc, free_port, wait_ready

from tuner_model.rate.effort import DEFAULT_EFFORT
from tuner_model.rate.request import DEFAULT_BPP

KEY = "tnr_browser-test-key-0123456789"


def _driver():  # noqa: ANN202
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (browser and driver):
        if os.environ.get("CI"):
            pytest.fail("chromium and chromium-driver are required in CI (scripts/test.sh installs them)")
        pytest.skip("no chromium / chromedriver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,1400",
                "--force-device-scale-factor=1"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=options)


def _wait(cond, timeout: float = 60.0, what: str = "condition", detail=None):  # noqa: ANN001, ANN202
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}" + (f": {detail()}" if detail else ""))


def _alert(driver):  # noqa: ANN001, ANN202
    from selenium.common.exceptions import NoAlertPresentException

    try:
        return driver.switch_to.alert
    except NoAlertPresentException:
        return None


def _shot(driver, name: str) -> None:  # noqa: ANN001
    folder = os.environ.get("TUNER_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(folder) / f"{name}.png"))


def test_the_page_end_to_end(tmp_path: Path, parrots_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    # Short fits (the page sends a rate and an effort; the service's default steps then apply), no rate limit.
    env = {**FAST, "TUNER_BOOTSTRAP_KEY": KEY, "TUNER_RATE_LIMIT_PER_S": "0", "TUNER_DEFAULT_STEPS": "60",
           "TUNER_SIGNING_KEYS": "page-test-signing-key-0001"}
    serve = Proc(["serve", "--port", str(port), "--data-dir", str(tmp_path / "data")], env, tmp_path / "serve.log")
    driver = None
    try:
        wait_ready(base, serve)
        driver = _driver()
        driver.get(f"{base}/")
        find = driver.find_element
        # keys are on (GET /v1/access says so), and none is kept: the page asks for one before any call
        dialog = _wait(lambda: find(By.ID, "key-dialog").get_attribute("open") is not None, 15, "the key dialog")
        assert dialog
        find(By.ID, "key-input").send_keys(KEY)
        find(By.ID, "key-save").click()

        # The page's defaults are the service's (GET /v1/limits), not its own.
        _wait(lambda: driver.execute_script("return document.body.dataset.limits") == "loaded", 15, "the limits")
        assert find(By.ID, "target-value").get_attribute("value") == f"{DEFAULT_BPP:g}"
        assert find(By.ID, "effort").get_attribute("value") == str(DEFAULT_EFFORT)
        # One tab stop for the drop zone: its file input is out of the tab order.
        assert find(By.ID, "drop").get_attribute("tabindex") == "0"
        assert driver.execute_script("return document.getElementById('file').tabIndex") == -1
        # Times as people say them.
        assert driver.execute_script("return [humanTime(45), humanTime(200), humanTime(3900)]") == [
            "45 s", "3 min 20 s", "1 h 5 min"]
        find(By.ID, "file").send_keys(str(parrots_path))
        driver.execute_script("document.getElementById('target-value').value = '2';"
                              "const e = document.getElementById('effort'); e.value = '1';"
                              "e.dispatchEvent(new Event('input'));")
        # The service's estimate, shown before Encode, for what is set now (96x64, 2 bpp, effort 1).
        expected = httpx.get(f"{base}/v1/estimate", params={"width": 96, "height": 64, "bpp": 2, "effort": 1},
                             headers={"Authorization": f"Bearer {KEY}"}).json()
        _wait(lambda: find(By.ID, "estimate").get_attribute("data-seconds") == f"{expected['seconds']:g}", 15,
              "the estimate", lambda: find(By.ID, "estimate").text)
        assert find(By.ID, "estimate").text.startswith("96×64: about ") and " s on the service's" in find(
            By.ID, "estimate").text
        _shot(driver, "upload")
        find(By.ID, "encode").click()
        _wait(lambda: find(By.ID, "job").is_displayed(), 15, "the progress panel")
        _wait(lambda: int(find(By.ID, "bar").get_attribute("aria-valuenow")) > 0
              or "succeeded" in find(By.ID, "job-text").text, 90, "progress")
        _shot(driver, "progress")
        # Quiet progress: the visible line is not a live region; the status region speaks on changes only.
        assert find(By.ID, "job-text").get_attribute("aria-live") is None
        assert find(By.ID, "job-status").get_attribute("role") == "status"
        _wait(lambda: find(By.ID, "bar").get_attribute("aria-valuenow") == "100"
              and "succeeded" in find(By.ID, "job-text").text, 120, "the fit to finish",
              lambda: f"{find(By.ID, 'job-text').text!r}; {driver.get_log('browser')}; {serve.tail()[-1500:]}")

        assert find(By.ID, "job-status").get_attribute("textContent") == "fit succeeded"
        view = find(By.ID, "view")
        _wait(lambda: view.get_attribute("data-renders") == "1", 30, "the first render")
        first_width = int(view.get_attribute("data-render-width"))
        assert "sig=" in view.get_attribute("src")  # signing is on: the page embeds signed render URLs
        viewer = find(By.ID, "viewer")
        assert abs(first_width - viewer.size["width"]) <= 2  # the picture fills the viewer at 1 pixel per pixel
        viewer.send_keys("+", "+", "+")  # 8×
        _wait(lambda: "zoom 8.0×" in find(By.ID, "view-info").text, 30, "the zoomed render")
        zoomed_width = int(view.get_attribute("data-render-width"))
        natural = driver.execute_script("return arguments[0].naturalWidth", view)
        # 1/8 of the image's width, rendered at the viewer's full width: rendered detail, not stretched pixels
        assert natural == zoomed_width and zoomed_width >= 0.9 * first_width and zoomed_width > 8 * 96 * 0.9
        viewer.send_keys(Keys.ARROW_LEFT)
        _wait(lambda: int(view.get_attribute("data-renders")) >= 3, 30, "a render after panning")
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", viewer)
        _shot(driver, "viewer-zoomed")

        # the comparison: the blob and JPEG, WebP and AVIF at no more bytes, each with its PSNR
        rows = _wait(lambda: driver.find_elements(By.CSS_SELECTOR, "#compare-list li[data-codec]"), 15, "comparisons")
        got = {r.get_attribute("data-codec"): (int(r.get_attribute("data-bytes")), float(r.get_attribute("data-psnr")))
               for r in rows}
        assert set(got) == {"tuner", "jpeg", "webp", "avif"}, got
        assert all(got[c][0] <= got["tuner"][0] for c in ("jpeg", "webp", "avif"))
        assert all(10 < p < 80 for _, p in got.values())
        from selenium.webdriver.support.ui import Select

        Select(find(By.ID, "compare-codec")).select_by_value("avif")
        compare = find(By.ID, "compare")
        _wait(lambda: driver.execute_script("return arguments[0].naturalWidth", compare) == 96, 15, "the AVIF file")
        assert find(By.ID, "compare-wrap").is_displayed()
        Select(find(By.ID, "compare-codec")).select_by_value("original")  # the upload, while it is kept
        _wait(lambda: find(By.ID, "compare").get_attribute("src").startswith("blob:")
              and driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", compare) == 96,
              15, "the original")
        Select(find(By.ID, "compare-codec")).select_by_value("avif")
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", viewer)
        _shot(driver, "comparison")

        # Downloads in another format at any width.
        fitted_id = _wait(lambda: driver.execute_script("return state.view && state.view.id"), 5, "the view")
        Select(find(By.ID, "download-format")).select_by_value("webp")
        width = find(By.ID, "png-width")
        width.clear()
        width.send_keys("150")
        find(By.ID, "download-png").click()
        _wait(lambda: find(By.ID, "download-png").get_attribute("data-last") == f"{fitted_id}-150.webp", 15,
              "the WebP download")

        # A .tnr made elsewhere is uploaded as it is, and opens in the viewer; it has no original to offer.
        blob = httpx.get(f"{base}/v1/images/{fitted_id}/weights", headers={"Authorization": f"Bearer {KEY}"})
        (tmp_path / "parrots.tnr").write_bytes(blob.content)
        find(By.ID, "file").send_keys(str(tmp_path / "parrots.tnr"))
        assert find(By.ID, "encode").text == "Upload the blob"
        find(By.ID, "encode").click()
        _wait(lambda: driver.execute_script("return state.view && state.view.id") not in (None, fitted_id), 30,
              "the uploaded blob in the viewer")
        original = [o for o in Select(find(By.ID, "compare-codec")).options if o.get_attribute("value") == "original"]
        _wait(lambda: not original[0].is_enabled(), 15, "no original for an uploaded blob")

        items = _wait(lambda: len(driver.find_elements(By.CSS_SELECTOR, "#gallery li[data-image-id]")) == 2
                      and driver.find_elements(By.CSS_SELECTOR, "#gallery li[data-image-id]"), 15, "the gallery")
        for item in items:  # each with its name (the file's) and date
            assert item.find_element(By.CSS_SELECTOR, "time").get_attribute("datetime")
        names = {item.find_element(By.CSS_SELECTOR, ".name").text for item in items}
        assert names == {parrots_path.name, "parrots.tnr"}, names
        # Delete asks first: dismissed, nothing goes; accepted, the image goes.
        image_id = items[0].get_attribute("data-image-id")
        items[0].find_element(By.CSS_SELECTOR, "button.delete").click()
        _wait(lambda: _alert(driver), 5, "the confirmation").dismiss()
        time.sleep(0.5)
        assert driver.find_elements(By.CSS_SELECTOR, f'#gallery li[data-image-id="{image_id}"]')
        for item in items:
            item.find_element(By.CSS_SELECTOR, "button.delete").click()
            _wait(lambda: _alert(driver), 5, "the confirmation").accept()
        _wait(lambda: not driver.find_elements(By.CSS_SELECTOR, "#gallery li[data-image-id]"), 15,
              "the images to leave the gallery")
        listed = httpx.get(f"{base}/v1/images", headers={"Authorization": f"Bearer {KEY}"}).json()
        assert listed["items"] == []

        # A fit still running survives a reload: the page finds it (GET /v1/jobs) and watches it again.
        r = httpx.post(f"{base}/v1/images", params={"steps": 20000}, content=parrots_path.read_bytes(),
                       headers={"Authorization": f"Bearer {KEY}", "Content-Type": "image/png"})
        job_id = r.json()["job_id"]
        driver.refresh()
        _wait(lambda: driver.execute_script("return state.watching") == job_id, 20, "the job found again")
        assert find(By.ID, "job").is_displayed()
        find(By.ID, "cancel").click()
        _wait(lambda: "cancelled" in find(By.ID, "job-text").text, 30, "the cancel")

        errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
        assert not errors, errors
    finally:
        if driver is not None:
            driver.quit()
        serve.stop()
