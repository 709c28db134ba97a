"""ONNX export checked against PyTorch with onnxruntime, and prediction from ONNX without PyTorch."""

import json
import os
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from helpers import SHALLOW, zero_init_unfrozen
from PIL import Image

import hrmedseg
from hrmedseg.cli import main as cli_main
from hrmedseg.data.synthetic import make_synthetic_dataset
from hrmedseg.deployment.export_onnx import export_onnx

SIZE = 64


def session(path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Shallow models, each saved and exported once: a binary HRMedSeg (through ``hrmedseg
    export``), a 3-class one trained on native windows (so ONNX prediction tiles it), and an
    HRMedSegSAM with and without the box-region prompt, and with the detail path."""
    root = tmp_path_factory.mktemp("onnx")
    torch.manual_seed(0)
    out = {}
    for name, model in (
        ("binary", hrmedseg.create_model("hrmedseg_t", img_size=SIZE, **SHALLOW)),
        ("classes", hrmedseg.create_model("hrmedseg_t", num_classes=3, img_size=SIZE, input_scale="native",
                                          **SHALLOW)),
        ("sam", hrmedseg.create_model("hrmedseg_sam_t", img_size=SIZE, **SHALLOW)),
        ("sam_regions", zero_init_unfrozen(hrmedseg.create_model("hrmedseg_sam_t", img_size=SIZE,
                                                                 box_region_prompt=True, **SHALLOW))),
        ("sam_detail", zero_init_unfrozen(hrmedseg.create_model("hrmedseg_sam_detail_t", img_size=SIZE,
                                                                **SHALLOW))),
    ):  # fmt: skip
        model.eval()
        checkpoint = hrmedseg.save_model(model, root / f"{name}.safetensors")
        if name == "binary":
            paths = [root / "binary.onnx"]
            argv = ["export", "--checkpoint", str(checkpoint), "--output", str(paths[0]), "--quiet"]
            assert cli_main(argv) == 0
        else:
            paths = export_onnx(model, root / f"{name}.onnx")
        out[name] = (model, checkpoint, paths)
    return out


@pytest.mark.parametrize("name", ["binary", "classes"])
def test_hrmedseg_graph_matches_pytorch_for_any_batch(exported, name):
    model, _, (path,) = exported[name]
    graph = session(path)
    for batch in (1, 3):
        images = torch.randn(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(batch))
        (logits,) = graph.run(None, {"images": images.numpy()})
        with torch.no_grad():
            reference = model(images).numpy()
        assert logits.shape == reference.shape
        assert np.abs(logits - reference).max() < 1e-4
        if name == "binary":
            np.testing.assert_array_equal(logits > 0, reference > 0)
        else:
            np.testing.assert_array_equal(logits.argmax(1), reference.argmax(1))


@pytest.mark.parametrize("name", ["sam", "sam_regions", "sam_detail"])
def test_sam_graphs_match_the_model_for_points_boxes_and_mask_prompts(exported, name):
    model, _, (encoder_path, decoder_path) = exported[name]
    encoder, decoder = session(encoder_path), session(decoder_path)
    images = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        reference = model.embed(images)
    # The image embeddings, and with the detail path the stem's maps, by name.
    assert [o.name for o in encoder.get_outputs()] == list(reference)
    embedding = dict(zip(reference, encoder.run(None, {"images": images.numpy()}), strict=True))
    for key, tensor in reference.items():
        assert np.abs(embedding[key] - tensor.numpy()).max() < 1e-4, key

    grid = model.config.grid_size
    no_mask = {"mask_input": np.zeros((2, 1, 4 * grid[0], 4 * grid[1]), np.float32),
               "has_mask_input": np.zeros(1, np.float32)}  # fmt: skip
    points = torch.tensor([[[20.0, 30.0], [40.0, 10.0]], [[5.0, 50.0], [33.0, 33.0]]])
    labels = torch.tensor([[1, 0], [1, 1]])
    boxes = torch.tensor([[4.0, 6.0, 50.0, 60.0], [10.0, 10.0, 30.0, 40.0]])
    previous = torch.randn(2, 1, 4 * grid[0], 4 * grid[1], generator=torch.Generator().manual_seed(8))
    corners, corner_labels = boxes.reshape(2, 2, 2), torch.tensor([[2, 3]] * 2)
    pad = (torch.zeros(2, 1, 2), torch.full((2, 1), -1))
    with_mask = {"mask_input": previous.numpy(), "has_mask_input": np.ones(1, np.float32)}
    cases = [  # (ONNX point_coords, point_labels, extra inputs) and the same prompts for model.decode
        ((torch.cat([points, pad[0]], 1), torch.cat([labels, pad[1]], 1), no_mask),
         {"point_coords": points, "point_labels": labels}),
        ((torch.cat([points[:, :1], corners], 1), torch.cat([labels[:, :1], corner_labels], 1), no_mask),
         {"point_coords": points[:, :1], "point_labels": labels[:, :1], "boxes": boxes}),
        ((corners, corner_labels, with_mask),
         {"boxes": boxes, "mask_inputs": previous}),
    ]  # fmt: skip
    for (coords, point_labels, extra), prompts in cases:
        inputs = {**embedding, "point_coords": coords.numpy(), "point_labels": point_labels.float().numpy(),
                  **extra}  # fmt: skip
        masks, iou = decoder.run(None, inputs)
        with torch.no_grad():
            single = model.decode(**reference, image_size=(SIZE, SIZE), multimask_output=False, **prompts)
            multi = model.decode(**reference, image_size=(SIZE, SIZE), multimask_output=True, **prompts)
        assert masks.shape == (2, 4, SIZE, SIZE) and iou.shape == (2, 4)
        expected = torch.cat([single["masks"], multi["masks"]], 1).numpy()
        assert np.abs(masks - expected).max() < 1e-4
        np.testing.assert_array_equal(masks > 0, expected > 0)
        expected_iou = torch.cat([single["iou_predictions"], multi["iou_predictions"]], 1).numpy()
        assert np.abs(iou - expected_iou).max() < 1e-4


def test_graphs_are_float32_throughout_and_carry_their_role(exported):
    low_precision = {onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}
    for name, role in (("binary", ["segmentation"]), ("sam", ["sam_encoder", "sam_decoder"])):
        _, _, paths = exported[name]
        for path, expected_role in zip(paths, role, strict=True):
            graph = onnx.load(str(path))
            types = [t.type.tensor_type.elem_type for t in [*graph.graph.input, *graph.graph.output,
                                                           *graph.graph.value_info]]  # fmt: skip
            types += [t.data_type for t in graph.graph.initializer]
            casts = [
                a.i for n in graph.graph.node if n.op_type == "Cast" for a in n.attribute if a.name == "to"
            ]
            assert not low_precision & {*types, *casts}, path.name
            metadata = {p.key: p.value for p in graph.metadata_props}
            assert metadata["hrmedseg_graph"] == expected_role
            assert json.loads(metadata["hrmedseg_config"])["img_size"] == [SIZE, SIZE]


def test_cli_export_then_predict_with_onnx_runs_without_torch(exported, tmp_path):
    _, checkpoint, (onnx_path,) = exported["binary"]  # written by hrmedseg export
    data = make_synthetic_dataset(tmp_path / "data", num_images=4, size_range=(50, 90))
    images = data / "images"
    script = (
        "import sys\n"
        "from hrmedseg.cli import main\n"
        f"status = main(['predict', '--onnx', {str(onnx_path)!r}, '--input', {str(images)!r},"
        f" '--output', {str(tmp_path / 'onnx_out')!r}, '--probabilities', '--quiet'])\n"
        "assert 'torch' not in sys.modules, 'predict --onnx imported torch'\n"
        "sys.exit(status)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run([sys.executable, "-c", script], check=True, env=env, timeout=120)
    assert cli_main(["predict", "--checkpoint", str(checkpoint), "--input", str(images),
                     "--output", str(tmp_path / "torch_out"), "--probabilities", "--quiet"]) == 0  # fmt: skip
    for image in sorted(images.iterdir()):
        ours = np.load(tmp_path / "onnx_out" / f"{image.stem}_prob.npy").astype(np.float32)
        reference = np.load(tmp_path / "torch_out" / f"{image.stem}_prob.npy").astype(np.float32)
        with Image.open(image) as img:
            assert ours.shape == (1, img.height, img.width)
        # Pillow's and torch's antialiased resizes round differently; nothing else differs.
        assert np.abs(ours - reference).max() < 2e-3
        agreement = np.mean((ours > 0.5) == (reference > 0.5))
        assert agreement > 0.999


def test_predict_onnx_refuses_graphs_it_cannot_run(exported, tmp_path, capsys):
    _, _, (encoder_path, _) = exported["sam"]
    identity = onnx.helper.make_model(onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["x"], ["y"])], "other",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
    ))  # fmt: skip
    onnx.save(identity, str(tmp_path / "other.onnx"))
    (tmp_path / "broken.onnx").write_bytes(b"not a graph")
    for name, edit in (("resized", {"img_size": [2 * SIZE, 2 * SIZE]}), ("no_config", None)):
        graph = onnx.load(str(exported["binary"][2][0]))
        for entry in graph.metadata_props:
            if entry.key == "hrmedseg_config":
                entry.value = "not json" if edit is None else json.dumps({**json.loads(entry.value), **edit})
        onnx.save(graph, str(tmp_path / f"{name}.onnx"))
    Image.new("RGB", (20, 20)).save(tmp_path / "a.png")
    for path, message in (
        (encoder_path, "the 'sam_encoder' graph of an hrmedseg export; predict --onnx needs"),
        (tmp_path / "other.onnx", "not exported by hrmedseg"),
        (tmp_path / "broken.onnx", "not a readable ONNX model"),
        (tmp_path / "missing.onnx", "ONNX model not found"),
        (
            tmp_path / "resized.onnx",
            f"metadata describes 3 x {2 * SIZE} x {2 * SIZE} inputs and 1 class map(s), but "
            f"the graph takes [3, {SIZE}, {SIZE}]",
        ),
        (tmp_path / "no_config.onnx", "its 'hrmedseg_config' metadata is not a model config"),
    ):
        argv = [
            "predict",
            "--onnx",
            str(path),
            "--input",
            str(tmp_path / "a.png"),
            "--output",
            str(tmp_path / "o"),
        ]
        assert cli_main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and str(path.name) in err and len(err.strip().splitlines()) == 1, err


def test_onnx_masks_are_postprocessed_per_class(exported):
    from hrmedseg.deployment.onnx_segmenter import OnnxSegmenter
    from hrmedseg.inference.postprocess import Postprocessing

    (path,) = exported["classes"][2]
    image = np.random.default_rng(0).random((90, 120, 3)).astype(np.float32)
    plain = OnnxSegmenter(path).predict(image)
    postprocessing = Postprocessing(min_size=15, keep_largest=True)
    cleaned = OnnxSegmenter(path, postprocessing=postprocessing).predict(image)
    np.testing.assert_array_equal(cleaned, postprocessing(plain))
    assert not np.array_equal(cleaned, plain)


def test_onnx_tiles_and_flips_as_pytorch_does_and_native_models_by_default(exported):
    """Tiled ONNX prediction shares the PyTorch path's blending and test-time flips: the same
    probabilities up to float rounding, for a model trained on native windows (tiled by default)
    and with --tile."""
    from hrmedseg.deployment.onnx_segmenter import OnnxSegmenter
    from hrmedseg.inference.tiling import Tiling

    native, _, (native_path,) = exported["classes"]
    model, _, (resized_path,) = exported["binary"]
    rng = np.random.default_rng(0)
    images = [rng.random((150, 100, 3)).astype(np.float32), rng.random((40, 90, 3)).astype(np.float32)]
    linear = Tiling(0.5, "linear")
    for onnx_segmenter, segmenter in (
        (
            OnnxSegmenter(native_path, batch_size=3, tta="flips"),
            hrmedseg.Segmenter(native, "cpu", tta="flips"),
        ),
        (OnnxSegmenter(resized_path, tiling=linear), hrmedseg.Segmenter(model, "cpu", tiling=linear)),
    ):
        assert onnx_segmenter.tiling is not None and onnx_segmenter.images_per_batch == 1
        ours = list(onnx_segmenter.iter_probabilities(images))
        reference = list(segmenter.iter_probabilities(images))
        for image, a, b in zip(images, ours, reference, strict=True):
            assert a.shape == b.shape == (b.shape[0], *image.shape[:2])
            assert np.abs(a - b).max() < 1e-4
    assert OnnxSegmenter(resized_path).tiling is None
    (ours,) = OnnxSegmenter(resized_path, tta="flips").iter_probabilities(images[1:])
    (reference,) = hrmedseg.Segmenter(model, "cpu", tta="flips").iter_probabilities(images[1:])
    np.testing.assert_allclose(ours, reference, atol=1e-4)
