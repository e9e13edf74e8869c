"""POST /v1/fim/completions (Mistral's fill-in-the-middle): code before and after a gap →
the code that fills it, for models whose tokenizer has FIM tokens. Answers in the chat
completion shape (JSON or SSE), as Mistral's API and SDK expect."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from magistral.api.auth import require_key
from magistral.api.errors import APIError
from magistral.api.schemas import NullIsDefault
from magistral.api.serving import check_prompt, find_local_model, generate_all, metered_stream, sampling
from magistral.api.streaming import DONE, SSE_HEADERS, chunk
from magistral.engine.engine import GenerationRequest
from magistral.engine.registry import ServedModel
from magistral.platform.calls import MeteredCall
from magistral.platform.gateway import Platform
from magistral.platform.keys import KeyInfo

router = APIRouter()


class FIMRequest(NullIsDefault):
    model: str
    prompt: str
    suffix: str = ""
    max_tokens: int | None = Field(None, ge=0)
    min_tokens: int | None = Field(None, ge=0)
    temperature: float | None = Field(None, ge=0.0, le=1.5)
    top_p: float = Field(1.0, ge=0.0, le=1.0)
    stream: bool = False
    stop: str | list[str] | None = None
    random_seed: int | None = Field(None, ge=0, lt=2**63)


@router.post("/v1/fim/completions")
async def fim_completions(req: FIMRequest, request: Request, key: KeyInfo = Depends(require_key)) -> Any:
    model = find_local_model(request, req.model, "/v1/fim/completions")
    if not model.fim:
        raise APIError(400, f"Model '{model.id}' does not support fill-in-the-middle (its tokenizer has no "
                       "FIM tokens); see capabilities.completion_fim in /v1/models", param="model")
    if req.min_tokens:
        raise APIError(400, "min_tokens is not supported", param="min_tokens")
    ids = await run_in_threadpool(model.prompter.encode_fim, req.prompt, req.suffix)
    check_prompt(model, ids)
    platform: Platform = request.app.state.platform
    call = platform.open_call(key, model.id, len(ids), max_tokens=req.max_tokens,
                              max_context=model.max_context_length)
    generation = GenerationRequest(ids, sampling(model, req.temperature, req.top_p, req.max_tokens,
                                                 req.random_seed, req.stop))
    if req.stream:
        return StreamingResponse(_stream(call, model, generation), media_type="text/event-stream",
                                 headers={**SSE_HEADERS, **call.headers})
    [choice] = await generate_all(call, model, [generation], request)
    return JSONResponse(headers=call.headers, content={
        "id": call.id, "object": "chat.completion", "created": call.created, "model": model.id,
        "usage": call.usage(),
        "choices": [{"index": 0, "finish_reason": choice.finish_reason,
                     "message": {"role": "assistant", "content": choice.text, "tool_calls": None,
                                 "prefix": False}}]})


async def _stream(call: MeteredCall, model: ServedModel, generation: GenerationRequest
                  ) -> AsyncIterator[bytes]:
    yield chunk(call.id, call.created, model.id, {"role": "assistant", "content": ""})
    async with contextlib.aclosing(metered_stream(call, model, generation)) as outputs:
        async for output in outputs:  # each billed before it is sent
            if output.text:
                yield chunk(call.id, call.created, model.id, {"content": output.text})
            if output.finish_reason:
                yield chunk(call.id, call.created, model.id, {"content": ""},
                            finish_reason=output.finish_reason, usage=call.usage())
    yield DONE
