"""A new user's first run of the page, scripted: a fresh `tuner serve` (the README's first command) and
headless chromium; upload a photo with the page's defaults (1 bpp, effort 4), wait for the fit, zoom 8×,
read the comparison, and save screenshots (wide and phone-sized).

    .venv/bin/python scripts/page_trial.py /work/shared/data/kodak/kodim23.png /tmp/trial
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

PORT = 8765


def _wait_ready(base: str) -> None:
    for _ in range(300):
        try:
            if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit("the service did not start")


def main(photo: str, out: str) -> int:
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = tempfile.mkdtemp()
    base = f"http://127.0.0.1:{PORT}"
    started = time.time()
    with open(out_dir / "serve.log", "wb") as log:
        serve = subprocess.Popen([sys.executable, "-m", "tuner_cli", "serve", "--port", str(PORT), "--data-dir", data],
                                 stdout=log, stderr=subprocess.STDOUT)
        options = webdriver.ChromeOptions()
        options.binary_location = shutil.which("chromium") or "chromium"
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1500"):
            options.add_argument(arg)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver = None
        try:
            _wait_ready(base)
            print("ready after", round(time.time() - started, 1), "s")
            driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
            driver.get(base + "/")
            time.sleep(1)
            driver.find_element(By.ID, "file").send_keys(photo)
            driver.find_element(By.ID, "encode").click()
            t0, last = time.time(), ""
            while time.time() - t0 < 900:
                text = driver.find_element(By.ID, "job-text").text
                if text != last and int(time.time() - t0) % 20 == 0:
                    print(round(time.time() - t0), text)
                    last = text
                if any(s in text for s in ("succeeded", "failed", "cancelled")):
                    break
                time.sleep(0.5)
            print("done after", round(time.time() - t0), "s:", driver.find_element(By.ID, "job-text").text)
            time.sleep(3)
            viewer = driver.find_element(By.ID, "viewer")
            viewer.send_keys("+", "+", "+")
            time.sleep(8)
            print("view:", driver.find_element(By.ID, "view-info").text)
            print("compare:", driver.find_element(By.ID, "compare-list").text)
            driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", viewer)
            driver.save_screenshot(str(out_dir / "zoomed.png"))
            driver.set_window_size(390, 844)
            time.sleep(1)
            driver.save_screenshot(str(out_dir / "phone.png"))
            print("console:", [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")])
        finally:
            if driver is not None:
                driver.quit()
            serve.terminate()
            serve.wait(30)
            shutil.rmtree(data, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
