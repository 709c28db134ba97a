"""The interactive page's HTTP API (no browser): embed once, decode prompts, download, refuse bad uploads."""

import base64
import io
import json
import threading

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

import hrmedseg
from hrmedseg import atomic
from hrmedseg.serve.app import create_app


def png(width: int, height: int, mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(width)
    shape = (height, width, 3) if mode == "RGB" else (height, width)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode).save(buffer, format="PNG")
    return buffer.getvalue()


def decoded(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


@pytest.fixture(scope="module")
def prompted():
    return TestClient(
        create_app(hrmedseg.create_model("hrmedseg_sam_t", img_size=64), "cpu", max_upload_bytes=200_000)
    )


def test_embed_once_then_decode_box_points_and_both_at_the_original_size(prompted, monkeypatch):
    assert prompted.get("/api/info").json()["kind"] == "prompted"
    opened = prompted.post("/api/image", content=png(150, 90), headers={"x-filename": "scan.png"}).json()
    assert (opened["width"], opened["height"]) == (150, 90)
    assert Image.open(io.BytesIO(base64.b64decode(opened["preview"]))).size == (150, 90)
    from hrmedseg.inference.sam_predictor import Predictor

    calls = []
    monkeypatch.setattr(Predictor, "set_image", lambda *a: calls.append(1))  # no second embedding
    for prompts, outputs in (
        ({"box": [10, 10, 80, 60], "multimask": False}, 1),
        ({"points": [[40, 30], [100, 70]], "labels": [1, 0]}, 3),
        ({"points": [[40, 30]], "labels": [1], "box": [10, 10, 80, 60], "multimask": False}, 1),
    ):
        answer = prompted.post("/api/decode", json={"session": opened["session"], **prompts})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert len(body["masks"]) == len(body["scores"]) == outputs
        assert all(decoded(m).shape == (90, 150) for m in body["masks"])
    assert not calls
    download = prompted.get("/api/mask.png", params={"session": opened["session"], "index": 0})
    assert download.status_code == 200 and "attachment" in download.headers["content-disposition"]
    assert Image.open(io.BytesIO(download.content)).size == (150, 90)


def test_bad_uploads_and_requests_are_refused_and_the_server_keeps_serving(prompted):
    too_big = prompted.post("/api/image", content=png(400, 400), headers={"x-filename": "big.png"})
    assert too_big.status_code == 413 and "big.png" in too_big.json()["detail"]
    garbage = prompted.post("/api/image", content=b"not an image", headers={"x-filename": "notes.txt"})
    assert (
        garbage.status_code == 400 and "notes.txt: unreadable or truncated image" in garbage.json()["detail"]
    )
    assert prompted.post("/api/image", content=b"").status_code == 400
    unknown = prompted.post("/api/decode", json={"session": "nope", "box": [0, 0, 5, 5]})
    assert unknown.status_code == 404 and "upload the image again" in unknown.json()["detail"]
    session = prompted.post("/api/image", content=png(60, 40)).json()["session"]
    empty = prompted.post("/api/decode", json={"session": session})
    assert empty.status_code == 400 and "at least one point or a box" in empty.json()["detail"]
    assert prompted.post("/api/decode", json={"session": session, "box": [1, 1, 30, 30]}).status_code == 200


def test_decode_refuses_what_prompt_files_refuse(prompted):
    session = prompted.post("/api/image", content=png(60, 40)).json()["session"]  # 60 wide, 40 high
    refused = {  # the same checks, and messages, as a prompt file's (inference/prompted.object_prompt)
        '{"box": [NaN, 1, 5, 5]}': "box must be finite numbers",
        '{"box": [true, 1, 5, 5]}': "box must hold numbers only",
        '{"points": [[Infinity, 3]], "labels": [1]}': "points must be finite numbers",
        '{"points": [[1, 2, 3]], "labels": [1]}': "points must be a list of [x, y] pairs",
        '{"points": [[1, 2]], "labels": [2]}': "'labels' must give 0 or 1",
        '{"points": [[1, 2]], "labels": []}': "'labels' must give 0 or 1",
        '{"box": [20, 1, 5, 5]}': "x0 <= x1",
        '{"box": [1, 1, 5, 45]}': "box outside the 60x40 (W x H) image",
        '{"points": [[-1, 2]], "labels": [1]}': "points outside the 60x40",
    }
    for body, message in refused.items():
        answer = prompted.post(
            "/api/decode", content=body.replace("{", f'{{"session": "{session}", ', 1),
            headers={"content-type": "application/json"},
        )  # fmt: skip
        assert answer.status_code == 400 and message in answer.json()["detail"], (body, answer.json())
    good = prompted.post("/api/decode", json={"session": session, "points": [[3, 4]], "labels": [1]})
    assert good.status_code == 200


def test_concurrent_users_keep_their_own_images_and_masks(prompted):
    sizes = [(70, 50), (120, 80), (90, 130)]
    results = {}

    def user(size):
        session = prompted.post("/api/image", content=png(*size)).json()["session"]
        body = prompted.post(
            "/api/decode", json={"session": session, "box": [5, 5, 40, 40], "multimask": False}
        )
        results[size] = (session, decoded(body.json()["masks"][0]).shape)

    threads = [threading.Thread(target=user, args=(size,)) for size in sizes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {size: shape for size, (_, shape) in results.items()} == {s: (s[1], s[0]) for s in sizes}
    assert len({session for session, _ in results.values()}) == 3


def test_an_automatic_model_returns_its_mask_with_the_upload():
    client = TestClient(create_app(hrmedseg.create_model("hrmedseg_t", img_size=64), "cpu"))
    assert client.get("/api/info").json()["kind"] == "automatic"
    body = client.post("/api/image", content=png(100, 70, "L")).json()
    assert decoded(body["masks"][0]).shape == (70, 100)
    refused = client.post("/api/decode", json={"session": body["session"], "box": [0, 0, 9, 9]})
    assert refused.status_code == 400 and "without prompts" in refused.json()["detail"]
    page = client.get("/")
    assert page.status_code == 200 and 'id="canvas"' in page.text
    assert json.loads(json.dumps(client.get("/api/info").json()))["max_upload_bytes"] == 50 * 2**20


def test_an_automatic_model_is_served_tiled_and_flipped_as_predict_would():
    """The page's mask is the one ``predict --tile --tta flips --min-size 30 --fill-holes`` writes;
    a prompted model refuses the flips."""
    from hrmedseg.errors import ConfigError
    from hrmedseg.inference.postprocess import Postprocessing
    from hrmedseg.inference.tiling import Tiling

    model = hrmedseg.create_model("hrmedseg_t", img_size=64).eval()
    options = {"tiling": Tiling(), "tta": "flips", "postprocessing": Postprocessing(30, fill_holes=True)}
    client = TestClient(create_app(model, "cpu", **options))
    upload = png(150, 90)
    served = decoded(client.post("/api/image", content=upload).json()["masks"][0]) > 0
    image = np.asarray(Image.open(io.BytesIO(upload)))
    expected = hrmedseg.Segmenter(model, "cpu", **options).predict(image) > 0
    np.testing.assert_array_equal(served, expected)
    assert not np.array_equal(
        expected, hrmedseg.Segmenter(model, "cpu", tiling=Tiling(), tta="flips").predict(image) > 0
    )
    assert not np.array_equal(expected, hrmedseg.Segmenter(model, "cpu").predict(image) > 0)
    with pytest.raises(ConfigError, match="for automatic models"):
        create_app(hrmedseg.create_model("hrmedseg_sam_t", img_size=64), "cpu", tta="hflip")


def test_a_native_scale_model_decodes_each_prompt_in_its_window_as_evaluate_does(monkeypatch):
    from hrmedseg.errors import ConfigError
    from hrmedseg.inference.prompted import ObjectPrompt, PromptedSegmenter
    from hrmedseg.inference.sam_predictor import Predictor
    from hrmedseg.inference.tiling import Tiling

    native = hrmedseg.create_model("hrmedseg_sam_t", img_size=64, input_scale="native").eval()
    client = TestClient(create_app(native, "cpu"))
    assert client.get("/api/info").json()["windows"] is True
    upload = png(200, 150)
    embedded = []
    set_image = Predictor.set_image
    monkeypatch.setattr(
        Predictor, "set_image", lambda self, image: (embedded.append(1), set_image(self, image))
    )
    session = client.post("/api/image", content=upload).json()["session"]
    assert embedded == []  # nothing to embed until a prompt names a window
    box = [150, 100, 165, 112]
    body = client.post("/api/decode", json={"session": session, "box": box, "multimask": False}).json()
    served = decoded(body["masks"][0]) > 0
    image = np.asarray(Image.open(io.BytesIO(upload)))
    _, expected, _ = PromptedSegmenter(Predictor(native, "cpu"), window=(64, 64)).segment(
        image, [ObjectPrompt(box=np.array(box, float))]
    )
    np.testing.assert_array_equal(served, expected[0])
    assert served[100:113, 150:166].any() and not served[:, :100].any()  # outside its window: nothing

    resized = hrmedseg.create_model("hrmedseg_sam_t", img_size=64)
    assert client_info(resized)["windows"] is False
    assert client_info(resized, tiling=Tiling())["windows"] is True  # --tile, as evaluate and predict
    with pytest.raises(ConfigError, match="--overlap and --blend are for automatic models"):
        create_app(resized, "cpu", tiling=Tiling(overlap=0.5))


def test_zoomed_windows_on_the_page_match_evaluate_and_automatic_models_refuse_them(monkeypatch):
    from hrmedseg.errors import ConfigError
    from hrmedseg.inference.prompted import ObjectPrompt, PromptedSegmenter
    from hrmedseg.inference.sam_predictor import Predictor

    native = hrmedseg.create_model("hrmedseg_sam_t", img_size=64, input_scale="native").eval()
    client = TestClient(create_app(native, "cpu", max_zoom=2))
    upload = png(60, 50)  # fits one window: only the zoom makes it windowed
    embedded = []
    set_image = Predictor.set_image
    monkeypatch.setattr(
        Predictor, "set_image", lambda self, image: (embedded.append(image.shape[:2]), set_image(self, image))
    )
    session = client.post("/api/image", content=upload).json()["session"]
    box = [20, 20, 25, 26]  # 7 rows: at most a quarter of a 32 x 32 window once doubled
    body = client.post("/api/decode", json={"session": session, "box": box, "multimask": False}).json()
    assert embedded == [(32, 32)]
    image = np.asarray(Image.open(io.BytesIO(upload)))
    oracle = PromptedSegmenter(Predictor(native, "cpu"), window=(64, 64), max_zoom=2)
    _, expected, _ = oracle.segment(image, [ObjectPrompt(box=np.array(box, float))])
    np.testing.assert_array_equal(decoded(body["masks"][0]) > 0, expected[0])
    with pytest.raises(ConfigError, match="--zoom is for HRMedSegSAM models"):
        create_app(hrmedseg.create_model("hrmedseg_t", img_size=64), "cpu", max_zoom=2)


def client_info(model, **options) -> dict:
    return TestClient(create_app(model, "cpu", **options)).get("/api/info").json()


def test_a_huge_decoded_upload_is_refused_from_its_header():
    client = TestClient(
        create_app(hrmedseg.create_model("hrmedseg_t", img_size=64), "cpu", max_upload_pixels=100_000)
    )
    buffer = io.BytesIO()
    Image.new("L", (2000, 1500)).save(buffer, format="PNG")  # 3 megapixels of zeros: a few KB
    assert len(buffer.getvalue()) < 20_000
    refused = client.post("/api/image", content=buffer.getvalue(), headers={"x-filename": "zeros.png"})
    assert refused.status_code == 400
    assert "zeros.png: 2000x1500 is 3.0 megapixels, above the upload limit of 0.1" in refused.json()["detail"]


def test_the_server_answers_while_a_model_runs(monkeypatch):
    """The model runs on a worker thread: another request is answered meanwhile."""
    from hrmedseg.serve import app as app_module

    release, started = threading.Event(), threading.Event()
    waiting = []  # holds True while the model is held back
    original = app_module.SegmentationService.open

    def slow_open(self, content, name):
        waiting.append(True)
        started.set()
        release.wait(timeout=10)  # on the event loop, this would hold every other request back
        waiting.clear()
        return original(self, content, name)

    monkeypatch.setattr(app_module.SegmentationService, "open", slow_open)
    # One client context: one event loop serves both requests, as uvicorn's does.
    with TestClient(create_app(hrmedseg.create_model("hrmedseg_t", img_size=64), "cpu")) as client:
        upload = threading.Thread(target=lambda: client.post("/api/image", content=png(40, 30)))
        upload.start()
        assert started.wait(timeout=30)
        assert client.get("/api/info").json()["kind"] == "automatic"
        assert waiting, "/api/info was answered only after the model had run"
        release.set()
        upload.join(timeout=30)
        assert not upload.is_alive()


def test_the_serve_command_builds_the_app_it_would_run(tmp_path, monkeypatch):
    import uvicorn

    from hrmedseg.cli import main as cli_main

    model = hrmedseg.save_model(hrmedseg.create_model("hrmedseg_t", img_size=64), tmp_path / "m.safetensors")
    served = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: served.update(app=app, **options))
    argv = ["serve", "--checkpoint", str(model), "--port", "7999", "--max-upload-mb", "1", "--device", "cpu"]
    assert cli_main(argv) == 0
    assert served["port"] == 7999 and served["host"] == "127.0.0.1"
    client = TestClient(served["app"])
    assert client.get("/api/info").json()["max_upload_bytes"] == 2**20
    huge = io.BytesIO()
    Image.new("L", (6000, 5000)).save(huge, format="PNG")  # 30 megapixels: above serve's default
    refused = client.post("/api/image", content=huge.getvalue(), headers={"x-filename": "huge.png"})
    assert refused.status_code == 400 and "above the upload limit of 25" in refused.json()["detail"]


def test_scores_shown_are_clamped_to_the_iou_range(prompted, monkeypatch):
    from hrmedseg.inference.sam_predictor import Predictor

    session = prompted.post("/api/image", content=png(60, 40)).json()["session"]
    masks = np.zeros((3, 40, 60), bool)
    monkeypatch.setattr(Predictor, "predict", lambda *a, **k: (masks, np.array([1.3, -0.2, 0.5]), None))
    body = prompted.post("/api/decode", json={"session": session, "points": [[5, 5]], "labels": [1]}).json()
    assert body["scores"] == [1.0, 0.0, 0.5]


def two_image_folder(root):
    images = root / "images"
    images.mkdir()
    (images / "a.png").write_bytes(png(60, 40))
    (images / "b.png").write_bytes(png(50, 30))
    return images


def test_a_folder_is_annotated_object_by_object_saved_and_reopened(tmp_path):
    from hrmedseg.inference.prompted import read_prompt_file
    from hrmedseg.serve.annotations import AnnotationFolder

    images, output = two_image_folder(tmp_path), tmp_path / "labels"
    model = hrmedseg.create_model("hrmedseg_sam_t", img_size=64)
    client = TestClient(create_app(model, "cpu", annotations=AnnotationFolder(images, output)))
    assert client.get("/api/info").json()["folder"] == {"images": 2}
    assert client.get("/api/folder").json()["images"] == [
        {"name": "a.png", "done": False},
        {"name": "b.png", "done": False},
    ]
    opened = client.post("/api/folder/open", json={"index": 0}).json()
    assert (opened["name"], opened["width"], opened["height"], opened["saved"]) == ("a.png", 60, 40, None)
    session = opened["session"]
    box = {"box": [2, 2, 30, 30]}
    points = {"points": [[45, 20], [50, 35]], "labels": [1, 0]}
    first = client.post(
        "/api/decode", json={"session": session, "object": 0, **box, "multimask": False}
    ).json()
    second = client.post("/api/decode", json={"session": session, "object": 1, **points}).json()
    chosen = int(np.argmax(second["scores"]))
    objects = [
        {"object": 0, "output": 0, "prompt": box},
        {"object": 1, "output": chosen, "prompt": points},
    ]
    saved = client.post("/api/save", json={"session": session, "objects": objects})
    assert saved.status_code == 200, saved.text
    assert saved.json() == {"saved": ["a.png", "a_objects.png", "a.json"], "objects": 2}

    masks = [decoded(first["masks"][0]) > 0, decoded(second["masks"][chosen]) > 0]
    expected = np.zeros((40, 60), np.uint8)
    expected[masks[0]] = 1
    expected[masks[1]] = 2  # the later object over the earlier
    np.testing.assert_array_equal(np.asarray(Image.open(output / "a_objects.png")), expected)
    np.testing.assert_array_equal(np.asarray(Image.open(output / "a.png")), np.where(expected > 0, 255, 0))
    prompts = read_prompt_file(output / "a.json", (40, 60))  # what predict --prompts reads
    np.testing.assert_array_equal(prompts[0].box, box["box"])
    np.testing.assert_array_equal(prompts[1].points, points["points"])
    np.testing.assert_array_equal(prompts[1].labels, points["labels"])
    exported = client.post("/api/export", json={"session": session, "objects": objects, "kind": "objects"})
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(exported.content))), expected)

    assert [e["done"] for e in client.get("/api/folder").json()["images"]] == [True, False]
    reopened = client.post("/api/folder/open", json={"index": 0}).json()
    assert reopened["saved"]["prompts"] == [box, points]
    for k, mask in enumerate(reopened["saved"]["masks"]):
        np.testing.assert_array_equal(decoded(mask) > 0, expected == k + 1)
    # the saved objects are the session's objects 0 and 1: saved again without a decode
    again = client.post("/api/save", json={"session": reopened["session"], "objects": objects[:1]})
    assert again.status_code == 200
    np.testing.assert_array_equal(np.asarray(Image.open(output / "a_objects.png")), expected == 1)


def test_folder_mode_refuses_what_it_cannot_do(tmp_path, prompted):
    from hrmedseg.errors import ConfigError, OutputError
    from hrmedseg.serve.annotations import AnnotationFolder

    images = two_image_folder(tmp_path)
    with pytest.raises(OutputError, match="the output folder is the input folder"):
        AnnotationFolder(images, images)
    folder = AnnotationFolder(images, tmp_path / "out")
    with pytest.raises(ConfigError, match="takes an HRMedSegSAM model"):
        create_app(hrmedseg.create_model("hrmedseg_t", img_size=64), "cpu", annotations=folder)
    client = TestClient(
        create_app(hrmedseg.create_model("hrmedseg_sam_t", img_size=64), "cpu", annotations=folder)
    )
    outside = client.post("/api/folder/open", json={"index": 2})
    assert outside.status_code == 400 and "no image 2: the folder holds 2" in outside.json()["detail"]
    uploaded = client.post("/api/image", content=png(60, 40)).json()["session"]
    client.post("/api/decode", json={"session": uploaded, "box": [1, 1, 9, 9], "multimask": False})
    choice = [{"object": 0, "prompt": {"box": [1, 1, 9, 9]}}]
    refused = client.post("/api/save", json={"session": uploaded, "objects": choice})
    assert refused.status_code == 400 and "uploaded, not opened from the folder" in refused.json()["detail"]
    never = client.post("/api/export", json={"session": uploaded, "objects": [{**choice[0], "object": 3}]})
    assert never.status_code == 400 and "no object 3" in never.json()["detail"]
    bad = client.post(
        "/api/export", json={"session": uploaded, "objects": [{"object": 0, "prompt": {"box": [1]}}]}
    )
    assert bad.status_code == 400 and "object 0: box must be [x0, y0, x1, y1]" in bad.json()["detail"]
    no_folder = prompted.get("/api/folder")
    assert (
        no_folder.status_code == 400 and "start serve with --input and --output" in no_folder.json()["detail"]
    )


def test_the_serve_command_annotates_a_folder(tmp_path, monkeypatch):
    import uvicorn

    from hrmedseg.cli import main as cli_main

    images = two_image_folder(tmp_path)
    model = hrmedseg.save_model(
        hrmedseg.create_model("hrmedseg_sam_t", img_size=64), tmp_path / "m.safetensors"
    )
    served = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: served.update(app=app))
    base = ["serve", "--checkpoint", str(model), "--device", "cpu"]
    assert cli_main([*base, "--input", str(images), "--output", str(tmp_path / "out")]) == 0
    assert TestClient(served["app"]).get("/api/info").json()["folder"] == {"images": 2}
    assert cli_main([*base, "--input", str(images)]) != 0


def test_a_save_onto_a_full_disk_is_named_and_the_image_stays_unsaved(tmp_path, monkeypatch):
    import errno

    from hrmedseg.serve import annotations
    from hrmedseg.serve.annotations import AnnotationFolder

    images, output = two_image_folder(tmp_path), tmp_path / "labels"
    model = hrmedseg.create_model("hrmedseg_sam_t", img_size=64)
    client = TestClient(create_app(model, "cpu", annotations=AnnotationFolder(images, output)))
    session = client.post("/api/folder/open", json={"index": 0}).json()["session"]
    client.post("/api/decode", json={"session": session, "box": [2, 2, 30, 30], "multimask": False})

    def full_disk(tmp):
        raise OSError(errno.ENOSPC, "No space left on device")

    real_write_mask = annotations.write_mask
    monkeypatch.setattr(annotations, "write_mask", lambda path, mask: atomic.atomic_write(path, full_disk))
    objects = [{"object": 0, "prompt": {"box": [2, 2, 30, 30]}}]
    failed = client.post("/api/save", json={"session": session, "objects": objects})
    assert failed.status_code == 507
    assert f"{output / 'a.png'}: could not be written (No space left on device)" in failed.json()["detail"]
    assert [e["done"] for e in client.get("/api/folder").json()["images"]] == [False, False]
    assert not [p for p in output.rglob("*") if p.is_file()]

    monkeypatch.setattr(annotations, "write_mask", real_write_mask)
    assert client.post("/api/save", json={"session": session, "objects": objects}).status_code == 200
