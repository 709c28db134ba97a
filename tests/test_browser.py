"""The interactive page end to end in a real headless Chromium: upload, click, see the mask,
download it at the original size; annotate a folder object by object, save, reopen.

Needs Chromium and its driver, ``apt-get install chromium chromium-driver`` (Debian): skipped
without them, run with the rest of the suite where they are installed (alone: ``python -m pytest
-m browser``).
"""

import contextlib
import json
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
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from hrmedseg.serve.annotations import AnnotationFolder  # noqa: E402
from hrmedseg.serve.app import create_app  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(app):
    """``app`` served by uvicorn on a free port, on a thread; yields its address."""
    port = free_port()
    instance = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    for _ in range(100):
        if instance.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    instance.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def server():
    with serving(create_app(hrmedseg.create_model("hrmedseg_sam_t", img_size=64), "cpu")) as address:
        yield address


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
    ActionChains(browser).move_to_element_with_offset(canvas, 30, 20).click().perform()  # from the centre
    wait.until(lambda d: canvas.get_attribute("data-mask-ready") == "1")
    assert "IoU" in browser.find_element(By.ID, "legend").text
    browser.find_element(By.ID, "download-mask").click()
    downloaded = tmp_path / "downloads" / "scan_mask.png"
    wait.until(lambda d: downloaded.is_file() and downloaded.stat().st_size > 0)
    with Image.open(downloaded) as mask:
        assert mask.size == (500, 300)


def test_a_failed_upload_clears_the_page_and_disables_the_downloads(server, browser, tmp_path):
    image, broken = tmp_path / "scan.png", tmp_path / "broken.png"
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(image)
    broken.write_bytes(b"not a picture")
    browser.get(server)
    wait = WebDriverWait(browser, 30)
    browser.find_element(By.ID, "file").send_keys(str(image))
    wait.until(lambda d: "embedded" in d.find_element(By.ID, "status").text)
    canvas = browser.find_element(By.ID, "canvas")
    ActionChains(browser).move_to_element(canvas).click().perform()
    wait.until(lambda d: canvas.get_attribute("data-mask-ready") == "1")
    assert browser.find_element(By.ID, "download-mask").is_enabled()
    browser.find_element(By.ID, "file").send_keys(str(broken))
    wait.until(lambda d: d.find_element(By.ID, "status").get_attribute("class") == "error")
    assert "broken.png: unreadable" in browser.find_element(By.ID, "status").text
    assert canvas.get_attribute("data-mask-ready") == "0"
    assert not browser.find_element(By.ID, "download-mask").is_enabled()


def test_a_folder_is_annotated_object_by_object_saved_and_reopened(browser, tmp_path):
    images, output = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (200, 300, 3), dtype=np.uint8)).save(images / "a.png")
    Image.fromarray(rng.integers(0, 255, (300, 200, 3), dtype=np.uint8)).save(images / "b.png")
    model = hrmedseg.create_model("hrmedseg_sam_t", img_size=64)
    with serving(create_app(model, "cpu", annotations=AnnotationFolder(images, output))) as address:
        browser.get(address)
        wait = WebDriverWait(browser, 30)
        status = lambda: browser.find_element(By.ID, "status").text  # noqa: E731
        wait.until(lambda d: "a.png (1/2)" in status())
        canvas = browser.find_element(By.ID, "canvas")
        objects = lambda: browser.find_element(By.ID, "canvas").get_attribute("data-objects")  # noqa: E731
        drag = ActionChains(browser).move_to_element_with_offset(canvas, -120, -80).click_and_hold()
        drag.move_by_offset(70, 50).release().perform()  # a box: the first object
        wait.until(lambda d: objects() == "1")
        ActionChains(browser).send_keys("n").perform()  # a new object, prompted with a point
        ActionChains(browser).move_to_element_with_offset(canvas, 90, 60).click().perform()
        wait.until(lambda d: objects() == "2")
        assert "object 2" in browser.find_element(By.ID, "legend").text

        browser.find_element(By.ID, "next").click()  # saves a.png's objects, opens b.png
        wait.until(lambda d: "b.png (2/2)" in status())
        saved = json.loads((output / "a.json").read_text())["objects"]
        assert len(saved) == 2 and "box" in saved[0] and saved[1]["labels"] == [1]
        with Image.open(output / "a_objects.png") as labels:
            assert labels.size == (300, 200) and set(np.unique(labels)) <= {0, 1, 2}
        ActionChains(browser).move_to_element(canvas).click().perform()
        wait.until(lambda d: objects() == "1")
        ActionChains(browser).send_keys("s").perform()
        wait.until(lambda d: "saved b.png: 1 object(s)" in status())
        assert (output / "b.json").is_file() and (output / "b.png").is_file()

        browser.get(address)  # reopened: both are done, and a.png shows its two objects
        wait.until(lambda d: "2 saved object(s)" in status())
        assert "a.png (1/2)" in status() and objects() == "2"
        options = browser.find_element(By.ID, "folder-image").text
        assert "✓ 1/2 a.png" in options and "✓ 2/2 b.png" in options
        ActionChains(browser).send_keys(Keys.ARROW_RIGHT).perform()
        wait.until(lambda d: "b.png (2/2)" in status() and objects() == "1")


def test_a_slow_click_shows_the_spinner_until_its_mask_arrives(browser, tmp_path, monkeypatch):
    # A native-scale model embeds a window on its first click there; a slow decode stands in for it.
    from hrmedseg.inference.image_prompter import ImagePrompter

    predict = ImagePrompter.predict
    monkeypatch.setattr(ImagePrompter, "predict", lambda *a, **k: (time.sleep(1.0), predict(*a, **k))[1])
    image = tmp_path / "slide.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (200, 300, 3), dtype=np.uint8)).save(image)
    model = hrmedseg.create_model("hrmedseg_sam_t", img_size=64, input_scale="native")
    with serving(create_app(model, "cpu")) as address:
        browser.get(address)
        wait = WebDriverWait(browser, 30)
        browser.find_element(By.ID, "file").send_keys(str(image))
        wait.until(lambda d: "embedded" in d.find_element(By.ID, "status").text)
        spinner, canvas = browser.find_element(By.ID, "busy"), browser.find_element(By.ID, "canvas")
        assert not spinner.is_displayed()
        ActionChains(browser).move_to_element(canvas).click().perform()
        wait.until(lambda d: spinner.is_displayed())
        wait.until(lambda d: canvas.get_attribute("data-mask-ready") == "1")
        assert not spinner.is_displayed()
