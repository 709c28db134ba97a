"""The README's screenshot of the interactive page: a model file and an image.

    python benchmarks/serve_screenshot.py --checkpoint runs/dsb/best.safetensors \
        --image IMAGE --output docs/serve_page.png

Starts the app with uvicorn, opens it in headless Chromium (``apt-get install chromium
chromium-driver``), uploads the image and saves a screenshot once the mask is drawn (an
automatic model's mask comes with the upload).
"""

from __future__ import annotations

import argparse
import shutil
import socket
import threading
import time

import uvicorn
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from hrmedseg import load_model
from hrmedseg.serve.app import create_app


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--image", required=True)
    parser.add_argument("--output", required=True)
    args = parser.parse_args()

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(load_model(args.checkpoint), "cpu"), port=port, log_level="warning")
    )
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1000,820"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(shutil.which("chromedriver")))
    try:
        driver.get(f"http://127.0.0.1:{port}")
        wait = WebDriverWait(driver, 60)
        driver.find_element(By.ID, "file").send_keys(args.image)
        wait.until(lambda d: " in " in d.find_element(By.ID, "status").text)
        wait.until(lambda d: d.find_element(By.ID, "canvas").get_attribute("data-mask-ready") == "1")
        driver.save_screenshot(args.output)
    finally:
        driver.quit()
        server.should_exit = True


if __name__ == "__main__":
    main()
