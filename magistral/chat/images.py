"""Images for vision models: decode and check (Pillow), then preprocess the way Mistral's models
were trained (mistral-common's recipe): RGB with alpha onto white, downscale to the maximum
side, bicubic resize to a whole number of (patch × merge) tiles, scale to [0, 1], CLIP mean/std."""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from magistral.chat.fetch import FetchError, Resolver, fetch_url, system_resolver

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
ALLOWED_FORMATS = {"PNG", "JPEG", "WEBP", "GIF"}


class ImageError(ValueError):
    """A client's image is unusable; the message says why (answered with 400 or 413)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass
class ImagePolicy:
    max_images: int = 8
    max_bytes: int = 10 * 1024 * 1024
    max_side: int = 10000  # larger than this in either dimension is refused outright
    # decoded pixels per image: a 300 KB PNG can declare 10000x10000 (1.8 GB once decoded). JPEGs
    # above it are decoded at a reduced scale (draft mode); other formats are refused
    max_pixels: int = 6000 * 4000
    allow_private_hosts: bool = False  # operator flag for on-premise image servers
    fetch_timeout: float = 10.0  # per network read
    download_deadline: float = 20.0  # per image, however slowly the bytes trickle in
    request_deadline: float = 30.0  # for all of a request's images together
    concurrent_decodes: int = 2  # across the server: bounds the memory decoding holds at once


_decoding: asyncio.Semaphore | None = None


def decode_image(data: bytes, policy: ImagePolicy) -> Image.Image:
    if len(data) > policy.max_bytes:
        raise ImageError(f"image of {len(data)} bytes exceeds the limit of {policy.max_bytes}", 413)
    try:
        image = Image.open(io.BytesIO(data))
    except Exception as exc:
        raise ImageError("image data is not a readable PNG, JPEG, WEBP or GIF") from exc
    if image.format not in ALLOWED_FORMATS:
        raise ImageError(f"image format {image.format} is not supported (PNG, JPEG, WEBP, GIF)")
    width, height = image.size
    if width > policy.max_side or height > policy.max_side:
        raise ImageError(f"image of {width}x{height} exceeds the limit of "
                         f"{policy.max_side}x{policy.max_side}")
    if getattr(image, "n_frames", 1) > 1:
        raise ImageError("animated images are not supported (send a single frame)")
    if width * height > policy.max_pixels:
        if image.format == "JPEG":  # decode at 1/2, 1/4 or 1/8 scale: never the full raster
            # draft picks the smallest power-of-two reduction that keeps at least the asked size:
            # ask for half the linear size that fits, so that what it picks fits too
            scale = 2 * (width * height / policy.max_pixels) ** 0.5
            image.draft("RGB", (int(width / scale), int(height / scale)))
        if image.size[0] * image.size[1] > policy.max_pixels:
            raise ImageError(f"image of {width}x{height} pixels exceeds the budget of {policy.max_pixels} "
                             "pixels", 413)
    try:
        image.load()
    except Exception as exc:
        raise ImageError("image data is truncated or corrupt") from exc
    return image


def _data_url_bytes(url: str) -> bytes:
    header, _, payload = url.partition(",")
    if ";base64" not in header:
        raise ImageError("data URLs must be base64-encoded (data:image/png;base64,...)")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageError("data URL is not valid base64") from exc


async def _decode_off_loop(data: bytes, policy: ImagePolicy) -> Image.Image:
    """Decoding takes seconds for a large image: a worker thread does it, a few at a time."""
    global _decoding
    if _decoding is None:
        _decoding = asyncio.Semaphore(policy.concurrent_decodes)
    async with _decoding:
        return await asyncio.to_thread(decode_image, data, policy)


async def load_image(url: str, policy: ImagePolicy, resolver: Resolver = system_resolver) -> Image.Image:
    """An image_url value → a checked PIL image. data: URLs and http(s) URLs (guarded) only."""
    if url.startswith("data:"):
        return await _decode_off_loop(_data_url_bytes(url), policy)
    if "://" not in url:  # bare base64, as some clients send
        try:
            data = base64.b64decode(url, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ImageError("image_url must be an http(s) URL, a data URL or base64 data") from exc
        return await _decode_off_loop(data, policy)
    try:
        async with asyncio.timeout(policy.download_deadline):
            data = await fetch_url(url, max_bytes=policy.max_bytes, timeout=policy.fetch_timeout,
                                   allow_private=policy.allow_private_hosts, resolver=resolver)
    except FetchError as exc:
        raise ImageError(str(exc)) from exc
    except TimeoutError as exc:
        raise ImageError(f"image download took longer than {policy.download_deadline:g} s") from exc
    return await _decode_off_loop(data, policy)


def to_rgb(image: Image.Image) -> Image.Image:
    """Transparent pixels become white, as in training."""
    if image.mode == "RGB":
        return image
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, "WHITE")
    background.paste(rgba, (0, 0), rgba)
    return background.convert("RGB")


def token_grid(width: int, height: int, patch: int, merge: int, max_side: int) -> tuple[int, int]:
    """(columns, rows) of image tokens: downscale to max_side, then ceil to whole tiles."""
    ratio = max(height / max_side, width / max_side)
    if ratio > 1:
        width, height = max(round(width / ratio), 1), max(round(height / ratio), 1)
    tile = patch * merge
    return (width - 1) // tile + 1, (height - 1) // tile + 1


def image_token_ids(columns: int, rows: int, img: int, img_break: int, img_end: int) -> list[int]:
    """Rows of [IMG] each ended by [IMG_BREAK]; the very last one is [IMG_END]."""
    tokens = ([img] * columns + [img_break]) * rows
    tokens[-1] = img_end
    return tokens


def preprocess(image: Image.Image, patch: int, merge: int, max_side: int) -> np.ndarray:
    """PIL image → float32 (3, H, W), H and W multiples of patch × merge."""
    columns, rows = token_grid(*image.size, patch, merge, max_side)
    size = (columns * patch * merge, rows * patch * merge)  # (width, height) for cv2
    return _resized(image, size)


def preprocess_fixed(image: Image.Image, height: int, width: int) -> np.ndarray:
    """PIL image → float32 (3, height, width), stretched whatever its aspect (models trained on one
    image size, magistral-mini)."""
    return _resized(image, (width, height))


def _resized(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    pixels = cv2.resize(np.array(to_rgb(image), dtype=np.float32), size, interpolation=cv2.INTER_CUBIC)
    pixels = pixels / np.float32(255.0)
    pixels = (pixels - np.asarray(CLIP_MEAN, dtype=np.float32)) / np.asarray(CLIP_STD, dtype=np.float32)
    return pixels.transpose(2, 0, 1)
