"""Images to content chunks: a file path, raw bytes, a PIL image or a URL."""

from __future__ import annotations

import base64
import io
import mimetypes
from pathlib import Path
from typing import Any

_SIGNATURES = {b"\x89PNG": "image/png", b"\xff\xd8\xff": "image/jpeg", b"GIF8": "image/gif",
               b"RIFF": "image/webp"}


def _mime(data: bytes) -> str:
    for signature, mime in _SIGNATURES.items():
        if data.startswith(signature):
            return mime
    return "application/octet-stream"  # the server names what it cannot decode


def image_url(image: Any) -> str:
    """An `image_url` value: http(s) and data: URLs pass through; paths, bytes and PIL images
    become base64 data URLs."""
    if isinstance(image, str) and image.startswith(("http://", "https://", "data:")):
        return image
    if isinstance(image, str | Path):
        path = Path(image)
        data = path.read_bytes()
        mime = mimetypes.guess_type(path.name)[0] or _mime(data)
    elif isinstance(image, bytes | bytearray):
        data = bytes(image)
        mime = _mime(data)
    elif hasattr(image, "save"):  # a PIL image
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        data, mime = buffer.getvalue(), "image/png"
    else:
        raise TypeError(f"cannot make an image of {type(image).__name__}")
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def image_chunk(image: Any) -> dict[str, Any]:
    return {"type": "image_url", "image_url": image_url(image)}


def user_message(text: str, *images: Any) -> dict[str, Any]:
    """A user message with text and images, in Mistral's content-chunk form."""
    if not images:
        return {"role": "user", "content": text}
    return {"role": "user", "content": [{"type": "text", "text": text}, *(image_chunk(i) for i in images)]}
