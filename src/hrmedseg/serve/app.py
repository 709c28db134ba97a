"""The interactive page of ``hrmedseg serve``: a FastAPI app with a small HTTP API and one page.

API (all coordinates in pixels of the original image, (x, y); masks at the original size):

- ``GET /api/info``: the model's kind (``prompted`` for HRMedSegSAM, ``automatic`` for HRMedSeg),
  name, input size, ``windows`` (whether prompts are decoded in native-scale windows) and the
  folder being annotated.
- ``POST /api/image`` with the image file as the request body: decodes it, computes the image
  embedding once (prompted; with ``windows``, each window of an image larger than the model's
  input is embedded on its first prompt instead) or the automatic mask, and opens a session.
  Returns ``session``, ``width``, ``height``, ``seconds``, ``preview`` (a base64 JPEG to show);
  automatic models also ``masks`` (one base64 PNG).
- ``POST /api/decode`` with JSON ``{"session", "object": K, "points": [[x, y], ...],
  "labels": [1 | 0, ...], "box": [x0, y0, x1, y1] | null, "multimask": bool}``: decodes those
  prompts for object K (default 0) against the cached embedding. Returns ``masks`` (base64 PNGs,
  0/255), ``scores`` (predicted IoU of each, in [0, 1]) and ``seconds``.
- ``GET /api/mask.png?session=S&object=K&index=I``: object K's I-th latest mask as a PNG download.
- ``POST /api/export`` with JSON ``{"session", "objects": [{"object": K, "output": I, "prompt":
  {...}}, ...], "kind": "mask" | "objects"}``: the union of the chosen masks (0/255) or the
  objects' label map (object k labelled k + 1) as a PNG.

In folder mode (``annotations``, see :mod:`.annotations`):

- ``GET /api/folder``: the images, each with its name and whether its objects are saved.
- ``POST /api/folder/open`` with JSON ``{"index": N}``: opens image N as ``/api/image`` opens an
  upload, and returns its saved objects (``saved``: ``prompts`` and base64 ``masks``, the masks
  loaded as objects 0..N-1 of the session) or null.
- ``POST /api/save`` with the body of ``/api/export`` less ``kind``: writes the image's objects.

Sessions live in memory (the least recently used is dropped beyond ``max_sessions``), each with
its own embedding and masks, so concurrent users do not see each other's state; only the folder
mode writes to disk. Uploads above ``max_upload_bytes`` or that do not decode are refused with a
message, and the server keeps serving.
"""

from __future__ import annotations

import base64
import io
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from PIL import Image
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from ..data.io import decode_image, index_mask_image
from ..errors import ConfigError, DataError, WriteError
from ..inference.image_prompter import ImagePrompter
from ..inference.options import refuse_zoom
from ..inference.postprocess import Postprocessing
from ..inference.prompted import (
    default_zoom,
    object_prompt,
    prompt_window,
    refuse_automatic_options,
    resolve_zoom,
    windows_of_tiling,
)
from ..inference.segmenter import Segmenter
from ..inference.tiling import Tiling
from ..modeling import PromptableSegmentationModel
from .annotations import AnnotationFolder, object_label_map

PAGE = Path(__file__).with_name("page.html")
PREVIEW_SIDE = 900  # the page's MAX_SIDE


@dataclass
class Session:
    """One user's image: its prompter (holding the embeddings), and each object's latest masks
    (an automatic model's mask is object 0). ``folder_index`` is the image's place in the
    annotated folder, None for an upload."""

    width: int
    height: int
    prompter: ImagePrompter | None = None
    objects: dict[int, list[np.ndarray]] = field(default_factory=dict)
    folder_index: int | None = None


def png_bytes(mask: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    # Fastest zlib level: a 0/255 mask compresses well anyway, and the click waits for it.
    Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def preview_jpeg(image: np.ndarray, max_side: int = PREVIEW_SIDE) -> bytes:
    """The picture the page shows: 8-bit RGB, at most ``max_side`` pixels wide or high (any input
    format the package reads, 16-bit and TIFF included, so the browser need not decode it)."""
    picture = Image.fromarray(np.rint(image * 255).astype(np.uint8))
    picture.thumbnail((max_side, max_side))
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


class SegmentationService:
    """The model and the sessions behind the API, independent of the web framework."""

    def __init__(
        self,
        model: Any,
        *,
        device: str = "auto",
        max_sessions: int = 16,
        max_upload_pixels: int | None = None,
        tiling: Tiling | None = None,
        tta: str = "none",
        postprocessing: Postprocessing | None = None,
        annotations: AnnotationFolder | None = None,
        max_zoom: int | None = None,
    ) -> None:
        self.max_upload_pixels = max_upload_pixels
        self.prompted = isinstance(model, PromptableSegmentationModel)
        # A promptable model decodes each prompt in a native-scale window when it was trained on
        # such windows, or when asked to (tiling: windows of the model's size, as --tile).
        self.window = None
        if self.prompted:
            native_windows = windows_of_tiling(tiling)
            refuse_automatic_options(None, tta, postprocessing)
            self.window = prompt_window(model.config, native_windows)
            max_zoom = resolve_zoom(max_zoom, self.window, default=default_zoom(model.config))
        elif annotations is not None:
            raise ConfigError("annotating a folder takes an HRMedSegSAM model: its objects come from prompts")
        else:
            refuse_zoom(max_zoom, "this model is automatic")
        self.max_zoom = max_zoom
        self.annotations = annotations
        self.model_name = model.config.name
        self.img_size = list(model.config.img_size)
        self.model, self.device = model, device
        self.segmenter = (
            None
            if self.prompted
            else Segmenter(model, device, batch_size=1, tiling=tiling, tta=tta, postprocessing=postprocessing)
        )
        self.max_sessions = max_sessions
        self.sessions: OrderedDict[str, Session] = OrderedDict()
        self.lock = threading.Lock()  # one model computation at a time; the sessions stay apart
        # Requests run on worker threads: the session table changes under its own lock.
        self.sessions_lock = threading.Lock()

    def info(self) -> dict[str, Any]:
        folder = None if self.annotations is None else {"images": len(self.annotations.images)}
        return {"kind": "prompted" if self.prompted else "automatic", "model": self.model_name,
                "img_size": self.img_size, "windows": self.window is not None, "folder": folder}  # fmt: skip

    def open(self, content: bytes, name: str) -> dict[str, Any]:
        image = decode_image(content, name, max_pixels=self.max_upload_pixels)  # names the problem
        return self._start(image, Session(image.shape[1], image.shape[0]))

    def folder(self) -> list[dict[str, Any]]:
        return self._folder().entries()

    def open_folder_image(self, index: int) -> dict[str, Any]:
        """Open image ``index`` of the annotated folder, with its saved objects loaded."""
        folder = self._folder()
        image, saved = folder.read(index)
        session = Session(image.shape[1], image.shape[0], folder_index=index)
        if saved is not None and saved.masks is not None:
            session.objects = {k: [mask] for k, mask in enumerate(saved.masks)}
        answer = self._start(image, session)
        answer["name"], answer["index"] = folder.image(index).name, index
        answer["saved"] = None if saved is None else {
            "prompts": saved.prompts,
            "masks": None if saved.masks is None else [self._encoded(m) for m in saved.masks],
        }  # fmt: skip
        return answer

    def _folder(self) -> AnnotationFolder:
        if self.annotations is None:
            raise ValueError("no folder is being annotated; start serve with --input and --output")
        return self.annotations

    @staticmethod
    def _encoded(mask: np.ndarray) -> str:
        return base64.b64encode(png_bytes(mask)).decode()

    def _start(self, image: np.ndarray, session: Session) -> dict[str, Any]:
        """Embed (prompted) or segment (automatic) ``image`` and keep ``session`` for it."""
        width, height = session.width, session.height
        started = time.perf_counter()
        with self.lock:
            if self.prompted:
                # its own embeddings, one model; windows are embedded on their first prompt
                session.prompter = ImagePrompter(
                    self.model, self.device, window=self.window, max_zoom=self.max_zoom
                )
                session.prompter.set_image(image)
            else:
                session.objects = {0: [self.segmenter.predict(image) > 0]}
        seconds = time.perf_counter() - started
        key = uuid.uuid4().hex
        with self.sessions_lock:
            self.sessions[key] = session
            while len(self.sessions) > self.max_sessions:
                self.sessions.popitem(last=False)
        answer = {"session": key, "width": width, "height": height, "seconds": seconds,
                  "preview": base64.b64encode(preview_jpeg(image)).decode()}  # fmt: skip
        if not self.prompted:
            answer["masks"] = [self._encoded(session.objects[0][0])]
        return answer

    def session(self, key: str) -> Session:
        with self.sessions_lock:
            if key not in self.sessions:
                raise KeyError("unknown or expired session; upload the image again")
            self.sessions.move_to_end(key)
            return self.sessions[key]

    def decode(
        self, key: str, *, points: list, labels: list, box: list | None, multimask: bool, object_id: int = 0
    ) -> dict[str, Any]:
        session = self.session(key)
        if session.prompter is None:
            raise ValueError("this model segments without prompts; its mask came with the upload")
        if not points and box is None:
            raise ValueError("give at least one point or a box")
        entry = {"points": points, "labels": labels} if points else {}
        if labels and not points:
            entry["labels"] = labels
        if box is not None:
            entry["box"] = box
        prompt = object_prompt(entry, (session.height, session.width), "prompt")  # as prompt files are
        started = time.perf_counter()
        with self.lock:
            masks, scores = session.prompter.predict(prompt, multimask_output=multimask)
        session.objects[object_id] = list(masks)
        return {
            "masks": [self._encoded(m) for m in masks],
            # the IoU head regresses an IoU; its raw output can stray outside [0, 1]
            "scores": [min(max(float(s), 0.0), 1.0) for s in scores],
            "seconds": time.perf_counter() - started,
        }

    def mask_png(self, key: str, index: int, object_id: int = 0) -> bytes:
        return png_bytes(self._chosen_mask(self.session(key), object_id, index))

    @staticmethod
    def _chosen_mask(session: Session, object_id: int, index: int) -> np.ndarray:
        if object_id not in session.objects:
            raise ValueError(f"no object {object_id} in this session: prompt it first")
        masks = session.objects[object_id]
        if not 0 <= index < len(masks):
            raise ValueError(f"no mask {index} of object {object_id}: it holds {len(masks)}")
        return masks[index]

    def chosen_objects(
        self, key: str, choices: list[ObjectChoice]
    ) -> tuple[Session, list[dict], list[np.ndarray]]:
        """The session and, per choice, its prompt entry (checked as prompt files are) and mask."""
        session = self.session(key)
        prompts, masks = [], []
        for i, choice in enumerate(choices):
            object_prompt(choice.prompt, (session.height, session.width), f"object {i}")
            prompts.append(choice.prompt)
            masks.append(self._chosen_mask(session, choice.object, choice.output))
        return session, prompts, masks

    def export_png(self, key: str, choices: list[ObjectChoice], kind: str) -> bytes:
        """The union of the chosen masks (``kind`` "mask", 0/255) or their label map ("objects")."""
        session, _, masks = self.chosen_objects(key, choices)
        labels = object_label_map(masks, (session.height, session.width))
        if kind == "mask":
            return png_bytes(labels > 0)
        buffer = io.BytesIO()
        index_mask_image(labels).save(buffer, format="PNG")
        return buffer.getvalue()

    def save(self, key: str, choices: list[ObjectChoice]) -> dict[str, Any]:
        """Write the objects of a folder image (:meth:`AnnotationFolder.save`)."""
        folder = self._folder()
        session, prompts, masks = self.chosen_objects(key, choices)
        if session.folder_index is None:
            raise ValueError(
                "this image was uploaded, not opened from the folder: download its objects instead"
            )
        written = folder.save(session.folder_index, prompts, masks)
        return {"saved": [path.name for path in written], "objects": len(masks)}


class Prompts(BaseModel):
    """The body of ``POST /api/decode``."""

    session: str
    object: int = 0
    # Left as JSON: object_prompt checks them as it checks prompt files, with the same messages
    # (a coercing schema here would read JSON's true as the coordinate 1).
    points: list[Any] = []
    labels: list[Any] = []
    box: list[Any] | None = None
    multimask: bool = True


class ObjectChoice(BaseModel):
    """One object of a save or an export: its id in the session, the output chosen, its prompt."""

    object: int
    output: int = 0
    prompt: dict[str, Any]


class Objects(BaseModel):
    """The body of ``POST /api/save`` and ``POST /api/export``."""

    session: str
    objects: list[ObjectChoice]
    kind: Literal["mask", "objects"] = "mask"


class FolderImage(BaseModel):
    """The body of ``POST /api/folder/open``."""

    index: int


def create_app(
    model: Any,
    device: str = "auto",
    *,
    max_upload_bytes: int = 50 * 2**20,
    max_upload_pixels: int | None = 25_000_000,
    max_sessions: int = 16,
    tiling: Tiling | None = None,
    tta: str = "none",
    postprocessing: Postprocessing | None = None,
    annotations: AnnotationFolder | None = None,
    max_zoom: int | None = None,
) -> FastAPI:
    """The FastAPI application for ``model`` (HRMedSeg or HRMedSegSAM).

    Args:
        model: a promptable model (the page takes prompts) or an automatic one (it shows its mask).
        device: "auto" (CUDA when there is one), "cpu", "cuda" or "cuda:N".
        max_upload_bytes: the largest upload accepted.
        max_upload_pixels: the largest decoded image accepted (None: the process's pixel limit
            alone), read from the file's header before decoding.
        max_sessions: sessions kept; the least recently used is dropped beyond it.
        tiling, tta, postprocessing: an automatic model's mask is made as ``predict`` makes it
            with these. A promptable model takes ``tiling`` alone (``Tiling()``): each prompt is
            then decoded in a window of the model's size around it at the image's own resolution,
            as a model trained with ``input_scale: native`` always is.
        annotations: the folder to annotate (prompted models), or None to take uploads only.
        max_zoom: a promptable model decoding in windows: enlarge a small boxed object's window
            up to this many times (see :class:`~hrmedseg.PromptedSegmenter`); 1: off; None: the
            model's default.
    """
    service = SegmentationService(
        model, device=device, max_sessions=max_sessions, max_upload_pixels=max_upload_pixels, tiling=tiling,
        tta=tta, postprocessing=postprocessing, annotations=annotations, max_zoom=max_zoom,
    )  # fmt: skip
    app = FastAPI(title="hrmedseg", docs_url=None, redoc_url=None)

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return PAGE.read_text()

    @app.get("/api/info")
    def info() -> dict[str, Any]:
        return {**service.info(), "max_upload_bytes": max_upload_bytes}

    @app.post("/api/image")
    async def image(request: Request) -> dict[str, Any]:
        name = request.headers.get("x-filename", "upload")
        declared = int(request.headers.get("content-length") or 0)
        if declared > max_upload_bytes:
            raise HTTPException(413, f"{name}: {declared / 2**20:.1f} MB is above the upload limit of "
                                     f"{max_upload_bytes / 2**20:g} MB")  # fmt: skip
        content = bytearray()  # grows in place: no copy of the upload per chunk
        async for chunk in request.stream():
            content += chunk
            if len(content) > max_upload_bytes:
                raise HTTPException(413, f"{name}: above the upload limit of {max_upload_bytes / 2**20:g} MB")
        if not content:
            raise HTTPException(400, "no image in the request body")
        try:  # on a worker thread: the event loop keeps answering while the model runs
            return await run_in_threadpool(service.open, bytes(content), name)
        except DataError as err:
            raise HTTPException(400, str(err)) from None

    def answered(call, *args, **kwargs):
        """``call``'s answer, its errors as HTTP errors: unknown session 404, bad request 400, a
        file that could not be saved (a full disk, no permission) 507 with its name."""
        try:
            return call(*args, **kwargs)
        except WriteError as err:
            raise HTTPException(507, str(err)) from None
        except KeyError as err:
            raise HTTPException(404, err.args[0]) from None
        except (ValueError, IndexError, DataError) as err:
            raise HTTPException(400, str(err)) from None

    @app.post("/api/decode")
    def decode(prompts: Prompts) -> dict[str, Any]:
        return answered(
            service.decode, prompts.session, points=prompts.points, labels=prompts.labels, box=prompts.box,
            multimask=prompts.multimask, object_id=prompts.object,
        )  # fmt: skip

    @app.get("/api/mask.png")
    def mask(session: str, index: int = 0, object: int = 0) -> Response:
        content = answered(service.mask_png, session, index, object)
        headers = {"Content-Disposition": 'attachment; filename="mask.png"'}
        return Response(content, media_type="image/png", headers=headers)

    @app.post("/api/export")
    def export(body: Objects) -> Response:
        return Response(
            answered(service.export_png, body.session, body.objects, body.kind), media_type="image/png"
        )

    @app.get("/api/folder")
    def folder() -> dict[str, Any]:
        return {"images": answered(service.folder)}

    @app.post("/api/folder/open")
    async def folder_open(body: FolderImage) -> dict[str, Any]:
        return await run_in_threadpool(answered, service.open_folder_image, body.index)

    @app.post("/api/save")
    def save(body: Objects) -> dict[str, Any]:
        return answered(service.save, body.session, body.objects)

    return app
