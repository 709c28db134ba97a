"""The interactive page end to end in a real headless Chromium: upload, click, see the mask,
download it at the original size.

Needs Chromium and its driver, ``apt-get install chromium chromium-driver`` (Debian): skipped
without them, run with the rest of the suite where they are installed (alone: ``python -m pytest
-m browser``).
"""

import shutil
import socket
import threading
import time

import numpy as np
import pytest
from PIL import Image

import hrmedseg

pytestmark = pytest.mark.browser

CHROMIUM, DRIVER = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")
if not (CHROMIUM and DRIVER):
    pytest.skip(
        "needs chromium and chromedriver: apt-get install chromium chromium-driver", allow_module_level=True
    )

uvicorn = pytest.importorskip("uvicorn")
webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from hrmedseg.serve.app import create_app  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    port = free_port()
    app = create_app(hrmedseg.create_model("hrmedseg_sam_t", img_size=64), "cpu")
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    instance = uvicorn.Server(config)
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    for _ in range(100):
        if instance.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    instance.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def browser(tmp_path):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,900"):
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"download.default_directory": str(tmp_path / "downloads")})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=DRIVER))
    yield driver
    driver.quit()


def test_upload_click_see_the_mask_and_download_it_at_the_original_size(server, browser, tmp_path):
    image = tmp_path / "scan.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 500, 3), dtype=np.uint8)).save(image)
    browser.get(server)
    wait = WebDriverWait(browser, 30)
    browser.find_element(By.ID, "file").send_keys(str(image))
    wait.until(lambda d: "embedded" in d.find_element(By.ID, "status").text)
    canvas = browser.find_element(By.ID, "canvas")
    assert (canvas.get_attribute("width"), canvas.get_attribute("height")) == ("500", "300")
    ActionChains(browser).move_to_element_with_offset(canvas, 30, 20).click().perform()  # from the centre
    wait.until(lambda d: canvas.get_attribute("data-mask-ready") == "1")
    assert "predicted IoU" in browser.find_element(By.ID, "score").text
    browser.find_element(By.ID, "download-mask").click()
    downloaded = tmp_path / "downloads" / "mask.png"
    wait.until(lambda d: downloaded.is_file() and downloaded.stat().st_size > 0)
    with Image.open(downloaded) as mask:
        assert mask.size == (500, 300)
