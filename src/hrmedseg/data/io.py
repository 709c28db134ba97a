"""Reading and writing 2-D images and masks (PNG, JPEG, TIFF, BMP; 8/16-bit; grey, RGB, RGBA)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..atomic import atomic_write
from ..errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
# Lossy formats: a mask saved as JPEG (Kvasir-SEG ships its masks so) carries compression noise,
# values 1-15 around every edge and 240-254 inside, so "any non-zero value" would add a halo.
LOSSY_SUFFIXES = (".jpg", ".jpeg")
EXIF_ORIENTATION = 0x0112  # values 5-8 turn the picture by 90 degrees


def is_lossy(path: str | Path) -> bool:
    return Path(path).suffix.lower() in LOSSY_SUFFIXES


def raise_for_problems(problems: list[str], summary: str) -> None:
    """Raise a :class:`DataError` for ``problems``, if any: a single problem as its own one-line
    message, several under ``summary``, one per line."""
    if len(problems) == 1:
        raise DataError(problems[0])
    if problems:
        raise DataError(f"{summary}:\n  " + "\n  ".join(problems))


# Pixel limit for reading an image. 64 megapixels (8000 x 8000) leaves 5x headroom over the
# largest dermoscopy photographs (4288 x 2848 = 12.2 MP). Prediction needs at most about 25 bytes
# per pixel on top of the model (decoded RGB, its float copy, full-size probabilities; measured:
# 10 at 4288 x 2848, 23 at 8000 x 8000), so peak memory stays in proportion: about 1.5 GB at the
# limit. Larger images should be cut into tiles, or the limit raised.
DEFAULT_MAX_PIXELS = 64_000_000
BYTES_PER_PIXEL_PREDICT = 25
_max_pixels: int | None = DEFAULT_MAX_PIXELS


@contextmanager
def pixel_limit(max_pixels: int | None) -> Iterator[None]:
    """Read images up to ``max_pixels`` (None: any size) inside the block; the CLI's
    ``--max-pixels``. It replaces PIL's own decompression-bomb check there, so the limit (and its
    message) is the same whatever the size."""
    global _max_pixels
    previous = _max_pixels, Image.MAX_IMAGE_PIXELS
    _max_pixels, Image.MAX_IMAGE_PIXELS = max_pixels, None
    try:
        yield
    finally:
        _max_pixels, Image.MAX_IMAGE_PIXELS = previous


def current_pixel_limit() -> int | None:
    return _max_pixels


def _check_pixels(path: Path, width: int, height: int, upload_limit: int | None = None) -> None:
    """Refuse an image above the pixel limit (``--max-pixels``) or, for an upload, above
    ``upload_limit``, from its header's size."""
    if upload_limit is not None and width * height > upload_limit:
        raise DataError(
            f"{path}: {width}x{height} is {width * height / 1e6:.1f} megapixels, "
            f"above the upload limit of {upload_limit / 1e6:g}"
        )
    if _max_pixels is None or width * height <= _max_pixels:
        return
    raise DataError(
        f"{path}: {width}x{height} is {width * height / 1e6:.0f} megapixels, above the limit of "
        f"{_max_pixels / 1e6:g} (--max-pixels); prediction would need about "
        f"{width * height * BYTES_PER_PIXEL_PREDICT / 2**30:.1f} GB: cut it into tiles, or raise "
        "--max-pixels if there is the memory"
    )


def _open(
    path: Path, as_image: bool, content: BinaryIO | None = None, upload_limit: int | None = None
) -> np.ndarray:
    """Decoded pixels of the file ``path``, or of ``content`` (then ``path`` only names it).
    Images in palette or exotic colour modes become RGB; for masks a palette image yields its
    indices, which is how index masks are often stored. A JPEG's EXIF orientation is applied, to
    images and masks alike, so that the pixels are laid out as every viewer shows them.
    Float pixels must be finite."""
    try:
        with pixel_limit(_max_pixels), Image.open(path if content is None else content) as img:
            _check_pixels(path, img.width, img.height, upload_limit)  # from the header, before decoding
            img.load()  # decode now, so truncated files fail here, with their name
            img = ImageOps.exif_transpose(img)
            if as_image and img.mode in ("P", "PA", "CMYK", "YCbCr", "HSV", "LAB"):
                img = img.convert("RGB")
            array = np.asarray(img)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except DataError:
        raise
    except UnidentifiedImageError:
        raise DataError(f"{path}: unreadable or truncated image (not a format Pillow can decode)") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise DataError(f"{path}: unreadable or truncated image ({err})") from None
    check_finite_pixels(array, str(path))
    return array


def check_finite_pixels(array: np.ndarray, name: str) -> None:
    """Refuse NaN and infinite pixels by name: they would make every probability NaN."""
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise DataError(f"{name}: {bad} pixel value(s) are NaN or infinite")


def _by_own_range(array: np.ndarray) -> np.ndarray:
    """Pixels rescaled to [0, 1] by their own minimum and maximum (all zeros if constant)."""
    array = array.astype(np.float32)
    low, high = float(array.min()), float(array.max())
    return (array - low) / (high - low) if high > low else np.zeros_like(array)


def _file_pixels_as_rgb(pixels: np.ndarray, name: str) -> np.ndarray:
    """Decoded (and checked) file pixels as :func:`as_float_rgb` gives them; a float image file
    is first rescaled by its own range, as 16-bit ones are, since float TIFFs hold any unit
    (counts, Hounsfield units, reflectance)."""
    if np.issubdtype(pixels.dtype, np.floating):
        pixels = _by_own_range(pixels)
    return _as_rgb(pixels, name)


def read_image(path: str | Path) -> np.ndarray:
    """An image file as float32 RGB in [0, 1], shape (H, W, 3); see :func:`as_float_rgb`."""
    path = Path(path)
    return _file_pixels_as_rgb(_open(path, as_image=True), str(path))


def decode_image(content: bytes, name: str, *, max_pixels: int | None = None) -> np.ndarray:
    """Encoded image bytes (an upload) as float32 RGB in [0, 1], shape (H, W, 3); errors name
    ``name``. The same checks and conversions as :func:`read_image`, and with ``max_pixels`` a
    bound of its own, read from the header before decoding: a small compressed upload can
    decode to gigabytes."""
    pixels = _open(Path(name), as_image=True, content=io.BytesIO(content), upload_limit=max_pixels)
    return _file_pixels_as_rgb(pixels, name)


def as_float_rgb(array: np.ndarray, name: str = "image") -> np.ndarray:
    """Pixels as float32 RGB in [0, 1], shape (H, W, 3).

    8-bit images are divided by 255 and float arrays are taken as already in [0, 1] (a float image
    *file* is rescaled by its range first, see :func:`read_image`). Integer images with more bits
    are rescaled by their own minimum and maximum (16-bit medical images rarely use the full
    range). Grey images are repeated to three channels; alpha is dropped. NaN or infinite values
    are refused by name.
    """
    array = np.asarray(array)
    check_finite_pixels(array, name)
    return _as_rgb(array, name)


def _as_rgb(array: np.ndarray, name: str) -> np.ndarray:
    """:func:`as_float_rgb` of pixels already checked to be finite."""
    if array.ndim == 3 and array.shape[2] in (2, 4):
        array = array[..., :-1]  # drop alpha
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] != 3:
        raise DataError(
            f"{name}: unsupported image layout {array.shape}; expected (H, W), (H, W, 3) or (H, W, 4)"
        )
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if array.dtype == bool or np.issubdtype(array.dtype, np.floating):
        return array.astype(np.float32, copy=False)  # read_image's output passes through as is
    return _by_own_range(array)


def read_mask(path: str | Path) -> np.ndarray:
    """A mask as an int64 array (H, W) of its stored values (grey; RGB masks must be grey-valued).

    A JPEG mask is lossy, so it can only be binary: it is read as 0/1, foreground where the value
    is above half its maximum (0/255 as usual, or any other bright value), which restores the
    drawn mask. (A 0/1 mask does not survive JPEG: its noise is as large as its values.) A float
    mask of whole numbers holds those indices; one with fractions (a soft mask, 0/0.8 or a
    probability map) is binary by the same rule as a JPEG mask.
    """
    path = Path(path)
    array = _open(path, as_image=False)
    if array.ndim == 3:
        # JPEG chroma noise makes a grey mask's channels differ slightly; their mean is the grey.
        channels = array[..., :3] if array.shape[2] >= 3 else array[..., :1]
        if is_lossy(path):
            channels = channels.mean(axis=2, keepdims=True)
        elif not (channels == channels[..., :1]).all():
            raise DataError(f"{path}: colour mask; masks must hold one value per pixel (grey or index)")
        array = channels[..., 0]
    soft = np.issubdtype(array.dtype, np.floating) and not (array == np.round(array)).all()
    if is_lossy(path) or soft:
        return (array > array.max(initial=0) / 2).astype(np.int64)
    return array.astype(np.int64)


def image_size(path: str | Path) -> tuple[int, int]:
    """(H, W) from the file header, without decoding the pixels; as :func:`read_image` lays the
    pixels out (an EXIF orientation that turns the image by 90 degrees swaps them)."""
    path = Path(path)
    try:
        with pixel_limit(_max_pixels), Image.open(path) as img:
            turned = img.getexif().get(EXIF_ORIENTATION) in (5, 6, 7, 8)
            return (img.width, img.height) if turned else (img.height, img.width)
    except (UnidentifiedImageError, OSError) as err:
        raise DataError(f"{path}: unreadable image ({err})") from None


def write_npy(path: str | Path, array: np.ndarray) -> Path:
    """Save an array as ``.npy``, atomically (a probability map)."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as file:  # a file object: np.save would append ".npy" to a name
            np.save(file, array)

    return atomic_write(path, write)


def write_png(path: str | Path, picture: np.ndarray) -> Path:
    """Save an (H, W) or (H, W, 3) uint8 picture as PNG, atomically (an overlay)."""
    return atomic_write(path, lambda tmp: Image.fromarray(picture).save(tmp, format="PNG"))


def index_mask_image(mask: np.ndarray) -> Image.Image:
    """An index mask as an image to save losslessly: 8-bit, or 16-bit when values exceed 255."""
    mask = np.asarray(mask)
    return Image.fromarray(mask.astype(np.uint8 if mask.max(initial=0) <= 255 else np.uint16))


def write_mask(path: str | Path, mask: np.ndarray) -> Path:
    """Save an index mask losslessly as PNG (:func:`index_mask_image`), atomically."""
    image = index_mask_image(mask)
    return atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))
