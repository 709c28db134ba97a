"""The screenshot of the interactive page in docs: a model file and an image.

    python benchmarks/serve_screenshot.py --checkpoint runs/dsb_sam/best.safetensors \
        --image data/dsb2018_stage1_train/images/X.png --mask data/dsb2018_stage1_train/instances/X.png \
        --objects 6 --output docs/serve_page.png

Starts the app with uvicorn, opens it in headless Chromium (``apt-get install chromium
chromium-driver``) and saves a screenshot once the masks are drawn. An automatic model's mask
comes with the upload. A promptable model is shown as an annotator sees it: the boxes of the
``--objects`` largest objects of ``--mask`` are decoded by the model (PromptedSegmenter) and saved
as that image's objects in a temporary annotation folder, which the page then opens, one colour
per object, with the last object's box drawn.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import uvicorn
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from hrmedseg import load_model
from hrmedseg.data import read_image, read_mask
from hrmedseg.data.prompts import consecutive_labels, label_objects
from hrmedseg.inference.prompted import PromptedSegmenter, prompts_for_objects
from hrmedseg.inference.sam_predictor import Predictor
from hrmedseg.modeling import PromptableSegmentationModel
from hrmedseg.serve.annotations import AnnotationFolder
from hrmedseg.serve.app import create_app


def annotated_folder(model, image: Path, mask: Path, objects: int, root: Path) -> AnnotationFolder:
    """A folder holding ``image``, its ``objects`` largest objects decoded from their boxes."""
    (root / "images").mkdir()
    shutil.copy(image, root / "images" / image.name)
    truth = read_mask(mask)  # a mask (objects: its connected components) or an instance map
    labels = label_objects(truth)[0] if truth.max(initial=0) <= 1 else consecutive_labels(truth)
    largest = np.argsort(np.bincount(labels.ravel())[1:])[::-1][:objects] + 1
    chosen = np.zeros_like(labels)
    for k, label in enumerate(sorted(largest), start=1):
        chosen[labels == label] = k
    prompts = prompts_for_objects(chosen, "box")
    _, masks, _ = PromptedSegmenter(Predictor(model, "cpu")).segment(read_image(image), prompts)
    folder = AnnotationFolder(root / "images", root / "labels")
    folder.save(0, [{"box": [int(round(v)) for v in p.box]} for p in prompts], list(masks))
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--image", type=Path, required=True)
    parser.add_argument(
        "--mask", type=Path, help="a promptable model: the objects to prompt with their boxes"
    )
    parser.add_argument("--objects", type=int, default=6, help="a promptable model: how many objects")
    parser.add_argument("--output", required=True)
    parser.add_argument("--window", type=int, nargs=2, default=[1000, 820], metavar=("WIDTH", "HEIGHT"))
    args = parser.parse_args()

    model = load_model(args.checkpoint)
    prompted = isinstance(model, PromptableSegmentationModel)
    if prompted and args.mask is None:
        parser.error("a promptable model needs --mask: its objects are prompted with their boxes")
    scratch = Path(tempfile.mkdtemp())
    folder = annotated_folder(model, args.image, args.mask, args.objects, scratch) if prompted else None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(model, "cpu", annotations=folder)
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
    window = f"--window-size={args.window[0]},{args.window[1]}"
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", window):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(shutil.which("chromedriver")))
    try:
        driver.get(f"http://127.0.0.1:{port}")
        wait = WebDriverWait(driver, 120)
        if not prompted:
            driver.find_element(By.ID, "file").send_keys(str(args.image))
        wait.until(lambda d: d.find_element(By.ID, "canvas").get_attribute("data-mask-ready") == "1")
        driver.save_screenshot(args.output)
    finally:
        driver.quit()
        server.should_exit = True
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
