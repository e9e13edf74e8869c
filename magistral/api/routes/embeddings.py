"""POST /v1/embeddings in Mistral's and OpenAI's shapes: validate → tokenize → metered call →
embedder → JSON (floats, or base64 of little-endian float32 as OpenAI's SDK asks by default)."""

from __future__ import annotations

import base64
from typing import Any, Literal

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from magistral.api.auth import require_key
from magistral.api.errors import APIError
from magistral.api.schemas import NullIsDefault
from magistral.engine.embedder import InputTooLong
from magistral.platform.gateway import Platform
from magistral.platform.keys import KeyInfo

router = APIRouter()
MAX_INPUTS = 2048  # OpenAI's limit per request
MAX_REQUEST_TOKENS = 131_072  # bounds one request's work (~1 minute of MiniLM on 2 cores)


class EmbeddingRequest(NullIsDefault):
    model: str
    input: Any = None  # a string or a list of strings; checked below for clear messages
    inputs: Any = None  # older Mistral clients' name for it
    encoding_format: Literal["float", "base64"] | None = None
    output_dtype: Literal["float"] | None = None  # Mistral: int8/binary need a model trained for them
    output_dimension: int | None = None  # Mistral's name
    dimensions: int | None = None  # OpenAI's name


def _texts(req: EmbeddingRequest) -> list[str]:
    raw = req.input if req.input is not None else req.inputs
    if raw is None:
        raise APIError(400, "input is required: a string or a list of strings", param="input")
    texts = [raw] if isinstance(raw, str) else raw
    if not isinstance(texts, list) or not texts:
        raise APIError(400, "input must be a non-empty string or a non-empty list of strings", param="input")
    if len(texts) > MAX_INPUTS:
        raise APIError(400, f"{len(texts)} inputs in one request; the limit is {MAX_INPUTS}", param="input")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise APIError(400, f"input[{i}] is a {type(text).__name__}; this server embeds text only (token "
                           "arrays belong to another tokenizer)", param="input")
        if not text.strip():
            raise APIError(400, f"input[{i}] is empty", param="input")
    return texts


@router.post("/v1/embeddings")
async def embeddings(req: EmbeddingRequest, request: Request, key: KeyInfo = Depends(require_key)) -> Any:
    registry = request.app.state.registry
    model = registry.get_embedder(req.model)
    if model is None:
        if registry.get(req.model) is not None:
            raise APIError(400, f"Model '{req.model}' does not make embeddings; use one of "
                           f"{[m.id for m in registry.embedders]}", param="model")
        raise APIError(404, f"Invalid model: '{req.model}' not found", param="model", code="model_not_found")
    texts = _texts(req)
    dimension = model.embedder.dimension
    wanted = req.dimensions if req.dimensions is not None else req.output_dimension
    if wanted is not None and wanted != dimension:
        raise APIError(400, f"Model '{model.id}' makes {dimension}-dimensional embeddings; it cannot "
                       f"give {wanted}", param="dimensions")
    try:
        ids = await run_in_threadpool(model.embedder.tokenize, texts)
    except InputTooLong as exc:
        raise APIError(400, f"input[{exc.index}] has {exc.tokens} tokens, more than model '{model.id}' "
                       f"accepts ({exc.limit})", param="input", code="context_length_exceeded") from exc
    tokens = sum(map(len, ids))
    if tokens > MAX_REQUEST_TOKENS:
        raise APIError(400, f"{tokens} tokens in one request; the limit is {MAX_REQUEST_TOKENS}",
                       param="input")
    platform: Platform = request.app.state.platform
    call = platform.open_call(key, model.id, tokens, max_tokens=0)
    try:
        vectors = await model.embedder.embed(ids)
    except BaseException:
        call.abandon(0, "error")
        raise
    await call.finish(0, "stop")  # durable before the answer
    as_base64 = req.encoding_format == "base64"
    data = []
    for i, vector in enumerate(vectors.numpy()):
        embedding: Any = (base64.b64encode(vector.astype("<f4").tobytes()).decode() if as_base64
                          else vector.astype(np.float64).tolist())
        data.append({"object": "embedding", "embedding": embedding, "index": i})
    return JSONResponse(headers=call.headers, content={
        "id": call.id, "object": "list", "model": model.id, "data": data, "usage": call.usage()})
