"""vLLM's tokenizer routes, which lm-evaluation-harness's `local-completions` uses to tokenize
with the served model's own tokenizer (no tokenizer files on the client): GET /tokenizer_info,
POST /tokenize, POST /detokenize. `model` is optional; the first served model by default."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from magistral.api.auth import require_key
from magistral.api.errors import APIError
from magistral.api.schemas import NullIsDefault
from magistral.api.serving import find_local_model
from magistral.engine.registry import ServedModel

router = APIRouter(dependencies=[Depends(require_key)])
MAX_TOKENIZE_CHARS = 4 * 1024 * 1024


class TokenizeRequest(NullIsDefault):
    model: str | None = None
    prompt: str = Field(max_length=MAX_TOKENIZE_CHARS)
    add_special_tokens: bool = True


class DetokenizeRequest(NullIsDefault):
    model: str | None = None
    tokens: list[int] = Field(max_length=1_000_000)


def _model(request: Request, name: str | None) -> ServedModel:
    if name is None:
        models = [m for m in request.app.state.registry.models if not getattr(m.prompter, "upstream", False)]
        if not models:
            raise APIError(404, "No generating model is served", param="model", code="model_not_found")
        return models[0]
    return find_local_model(request, name, "the tokenizer routes")


@router.get("/tokenizer_info")
async def tokenizer_info(request: Request, model: str | None = None) -> dict[str, Any]:
    served = _model(request, model)
    tokenizer = served.tokenizer
    template = getattr(getattr(served.prompter, "template", None), "source", None)
    return {"model": served.id, "tokenizer_class": type(tokenizer).__name__,
            "eos_token": tokenizer.eos_token or None, "bos_token": tokenizer.bos_token or None,
            "pad_token": None,
            "chat_template": template, "model_max_length": served.max_context_length,
            "vocab_size": tokenizer.vocab_size}


@router.post("/tokenize")
async def tokenize(req: TokenizeRequest, request: Request) -> dict[str, Any]:
    served = _model(request, req.model)
    tokens = await run_in_threadpool(served.prompter.encode_text, req.prompt, req.add_special_tokens)
    return {"model": served.id, "tokens": tokens, "count": len(tokens),
            "max_model_len": served.max_context_length}


@router.post("/detokenize")
async def detokenize(req: DetokenizeRequest, request: Request) -> dict[str, Any]:
    served = _model(request, req.model)
    if any(not 0 <= t < served.tokenizer.vocab_size for t in req.tokens):
        raise APIError(400, f"tokens outside the vocabulary [0, {served.tokenizer.vocab_size})",
                       param="tokens")
    return {"model": served.id, "prompt": await run_in_threadpool(served.tokenizer.decode, req.tokens)}
