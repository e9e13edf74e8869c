"""Image decoding limits, and our preprocessing against mistral-common's image encoder."""

from __future__ import annotations

import asyncio
import base64
import io

import numpy as np
import pytest
from mistral_common.protocol.instruct.chunk import ImageChunk
from mistral_common.tokens.tokenizers.image import ImageConfig, ImageEncoder, SpecialImageIDs
from PIL import Image

from magistral.chat.images import ImageError, ImagePolicy, decode_image, load_image, preprocess, to_rgb
from magistral.chat.mistral_prompt import NativeImageEncoder

SIZES = [(1, 1), (3, 200), (200, 3), (17, 33), (33, 17), (64, 64), (65, 65), (100, 37), (1500, 700),
         (700, 3000), (1024, 1024), (5, 5)]  # (width, height): tiny, tall, wide, odd, over-size


def random_image(width: int, height: int, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(width * 10007 + height)
    channels = len(mode)
    return Image.fromarray(rng.integers(0, 256, (height, width, channels), dtype=np.uint8))


@pytest.mark.parametrize(("patch", "merge", "max_side"), [(16, 1, 1024), (14, 2, 1540), (4, 2, 64)])
def test_preprocessing_equals_mistral_common(patch: int, merge: int, max_side: int) -> None:
    config = ImageConfig(image_patch_size=patch, max_image_size=max_side, spatial_merge_size=merge)
    ids = SpecialImageIDs(img=10, img_break=12, img_end=13)
    reference, ours = ImageEncoder(config, ids), NativeImageEncoder(config, ids)
    for width, height in SIZES:
        image = random_image(width, height)
        expected, got = reference(ImageChunk(image=image)), ours(ImageChunk(image=image))
        assert got.tokens == expected.tokens, (width, height)
        assert got.image.shape == expected.image.shape
        assert np.abs(got.image - expected.image).max() <= 1e-5, (width, height)
        assert got.image.shape[1] % (patch * merge) == 0 and got.image.shape[2] % (patch * merge) == 0
        assert max(got.image.shape[1:]) <= max_side + patch * merge


def test_transparent_pixels_become_white() -> None:
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert to_rgb(rgba).getpixel((0, 0)) == (255, 255, 255)
    config = ImageConfig(16, 1024)
    ids = SpecialImageIDs(10, 12, 13)
    image = random_image(30, 20, "RGBA")
    assert np.abs(NativeImageEncoder(config, ids)(ImageChunk(image=image)).image
                  - ImageEncoder(config, ids)(ImageChunk(image=image)).image).max() <= 1e-5
    assert preprocess(image, 16, 1, 1024).dtype == np.float32


def encoded(image: Image.Image, fmt: str, **kw) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kw)
    return buffer.getvalue()


def test_decode_accepts_the_four_formats() -> None:
    image = random_image(20, 10)
    for fmt in ("PNG", "JPEG", "WEBP", "GIF"):
        assert decode_image(encoded(image, fmt), ImagePolicy()).size == (20, 10)


def test_decode_limits() -> None:
    policy = ImagePolicy(max_bytes=2000, max_side=100)
    with pytest.raises(ImageError, match="exceeds the limit") as too_big:
        decode_image(b"x" * 2001, policy)
    assert too_big.value.status == 413
    with pytest.raises(ImageError, match="101x5"):
        decode_image(encoded(Image.new("RGB", (101, 5)), "PNG"), policy)
    frames = [Image.new("RGB", (8, 8), c) for c in ("red", "blue")]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    with pytest.raises(ImageError, match="animated"):
        decode_image(buffer.getvalue(), ImagePolicy())
    with pytest.raises(ImageError, match="not a readable"):
        decode_image(b"definitely not an image", ImagePolicy())
    with pytest.raises(ImageError, match="not supported"):
        decode_image(encoded(Image.new("RGB", (8, 8)), "BMP"), ImagePolicy())
    with pytest.raises(ImageError, match="truncated"):
        decode_image(encoded(random_image(64, 64), "PNG")[:200], ImagePolicy())


def test_load_image_from_data_url_and_refusals() -> None:
    data = base64.b64encode(encoded(random_image(9, 7), "PNG")).decode()
    assert asyncio.run(load_image(f"data:image/png;base64,{data}", ImagePolicy())).size == (9, 7)
    for bad, message in [("data:image/png;base64,@@@", "base64"), ("file:///etc/passwd", "scheme"),
                         ("ftp://example.invalid/x.png", "scheme"), ("data:image/png,abc", "base64")]:
        with pytest.raises(ImageError, match=message):
            asyncio.run(load_image(bad, ImagePolicy()))


def test_pixel_bombs_are_refused_before_decoding() -> None:
    bomb = io.BytesIO()
    Image.new("L", (10_000, 10_000)).save(bomb, "PNG")  # ~100 KB file, 100 Mpixels
    with pytest.raises(ImageError, match="exceeds the budget") as refused:
        decode_image(bomb.getvalue(), ImagePolicy())
    assert refused.value.status == 413


def test_large_jpegs_decode_at_a_reduced_scale_within_the_budget() -> None:
    photo = io.BytesIO()
    Image.new("RGB", (8000, 6000), (200, 30, 30)).save(photo, "JPEG", quality=50)
    policy = ImagePolicy(max_pixels=4_000_000)
    image = decode_image(photo.getvalue(), policy)
    assert image.size[0] * image.size[1] <= policy.max_pixels and image.size[0] >= 1000


def test_a_trickling_image_server_is_cut_off_by_the_download_deadline() -> None:
    import http.server
    import threading
    import time

    class Trickle(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            try:
                for _ in range(1000):  # one byte every 0.2 s: each read is quick, the whole is not
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.2)
            except OSError:  # the client gave up, as it should
                pass

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Trickle)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    policy = ImagePolicy(allow_private_hosts=True, download_deadline=1.0)
    started = time.monotonic()
    try:
        with pytest.raises(ImageError, match="longer than 1 s"):
            asyncio.run(load_image(f"http://127.0.0.1:{server.server_address[1]}/slow.png", policy))
    finally:
        server.shutdown()
    assert time.monotonic() - started < 5
