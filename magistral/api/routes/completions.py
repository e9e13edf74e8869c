"""POST /v1/completions (OpenAI's legacy text completions): raw prompts (text or token ids, one
or several), n choices each, stop strings, streaming, and logprobs with `echo`, which returns
the prompt's own token logprobs: what lm-evaluation-harness's local-completions model and
log-likelihood evals use. validate → prompt ids → metered call → engine → (SSE | JSON)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import Field, model_validator
from starlette.concurrency import run_in_threadpool

from magistral.api.auth import require_key
from magistral.api.errors import APIError
from magistral.api.schemas import SamplingOptions
from magistral.api.serving import (
    Choice,
    check_prompt,
    check_sampling_options,
    find_local_model,
    generate_all,
    metered_streams,
    sampling,
)
from magistral.api.streaming import DONE, SSE_HEADERS, sse
from magistral.engine.engine import GenerationRequest
from magistral.engine.registry import ServedModel
from magistral.engine.sampling import TokenLogprob
from magistral.platform.calls import MeteredCall
from magistral.platform.gateway import Platform
from magistral.platform.keys import KeyInfo

router = APIRouter()
MAX_PROMPTS = 64  # prompts in one request (each × n choices)


class CompletionRequest(SamplingOptions):
    model: str
    prompt: str | list[str] | list[int] | list[list[int]]
    suffix: str | None = None
    max_tokens: int = Field(16, ge=0)  # OpenAI's default
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float = Field(1.0, ge=0.0, le=1.0)
    n: int = Field(1, ge=1, le=16)
    stream: bool = False
    logprobs: int | None = Field(None, ge=0, le=20)
    echo: bool = False
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0, lt=2**63)
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    best_of: int | None = Field(None, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _mistral_names(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("seed") is None and data.get("random_seed") is not None:
            data = {**data, "seed": data["random_seed"]}
        return data


async def _prompts(req: CompletionRequest, model: ServedModel) -> list[list[int]]:
    raw = req.prompt
    if isinstance(raw, str):
        raw = [raw]
    if not raw:
        raise APIError(400, "prompt must not be an empty list", param="prompt")
    if isinstance(raw[0], int):  # one prompt as token ids
        raw = [raw]  # type: ignore[list-item]
    if len(raw) > MAX_PROMPTS:
        raise APIError(400, f"{len(raw)} prompts in one request; the limit is {MAX_PROMPTS}", param="prompt")
    vocab = model.tokenizer.vocab_size
    prompts = []
    for item in raw:
        if isinstance(item, str):
            if req.suffix is not None:
                ids = await run_in_threadpool(model.prompter.encode_fim, item, req.suffix)
            else:
                ids = await run_in_threadpool(model.prompter.encode_text, item)
        else:
            if req.suffix is not None:
                raise APIError(400, "suffix needs text prompts", param="suffix")
            ids = list(item)  # type: ignore[arg-type]
            if any(not 0 <= i < vocab for i in ids):
                raise APIError(400, f"prompt has token ids outside the vocabulary [0, {vocab})",
                               param="prompt")
        check_prompt(model, ids)
        prompts.append(ids)
    return prompts


@router.post("/v1/completions")
async def completions(req: CompletionRequest, request: Request, key: KeyInfo = Depends(require_key)) -> Any:
    model = find_local_model(request, req.model, "/v1/completions")
    if req.best_of is not None and req.best_of != req.n:
        raise APIError(400, "best_of is not supported (use n)", param="best_of")
    check_sampling_options(req, model)
    if req.suffix is not None and not model.fim:
        raise APIError(400, f"Model '{model.id}' has no fill-in-the-middle tokens: suffix is not supported",
                       param="suffix")
    prompts = await _prompts(req, model)
    platform: Platform = request.app.state.platform
    call = platform.open_call(key, model.id, [len(p) for p in prompts], max_tokens=req.max_tokens, n=req.n,
                              max_context=model.max_context_length)
    wants_prompt_logprobs = req.echo and req.logprobs is not None
    generations = [
        GenerationRequest(ids, sampling(model, req.temperature, req.top_p, req.max_tokens,
                                        None if req.seed is None else req.seed + i, req.stop,
                                        logprobs=req.logprobs, presence_penalty=req.presence_penalty,
                                        frequency_penalty=req.frequency_penalty, **req.sampling_options()),
                          prompt_logprobs=req.logprobs if wants_prompt_logprobs else None)
        for ids in prompts for i in range(req.n)]
    if req.stream:
        return StreamingResponse(_stream(call, model, generations, req), media_type="text/event-stream",
                                 headers={**SSE_HEADERS, **call.headers})
    choices = await generate_all(call, model, generations, request)
    return JSONResponse(headers=call.headers, content={
        "id": call.id, "object": "text_completion", "created": call.created, "model": model.id,
        "usage": call.usage(),
        "choices": [_choice(model, i, g.prompt_ids, c, req) for i, (g, c) in
                    enumerate(zip(generations, choices, strict=True))]})


def _finish_reason(reason: str | None) -> str | None:
    return "length" if reason == "model_length" else reason


def _choice(model: ServedModel, index: int, prompt: list[int], choice: Choice, req: CompletionRequest
            ) -> dict[str, Any]:
    text = choice.text
    logprobs = None
    if req.echo:
        text = model.tokenizer.decode(prompt) + text
    if req.logprobs is not None:
        logprobs = logprob_block(model, prompt if req.echo else None, choice.prompt_logprobs, choice.logprobs)
    return {"index": index, "text": text, "logprobs": logprobs,
            "finish_reason": _finish_reason(choice.finish_reason)}


def logprob_block(model: ServedModel, prompt: list[int] | None,
                  prompt_entries: list[TokenLogprob | None] | None, entries: list[TokenLogprob],
                  offset: int = 0) -> dict[str, Any]:
    """OpenAI's legacy logprobs object: token strings, their logprobs, the top alternatives and
    each token's character offset in the returned text. With `prompt` (echo) the prompt's
    tokens come first; the first of them has no logprob (null)."""
    decode = model.tokenizer.decode
    rows: list[tuple[int, TokenLogprob | None]] = []
    if prompt is not None:
        known = prompt_entries or [None]
        rows += [(token, known[i] if i < len(known) else None) for i, token in enumerate(prompt)]
    rows += [(e.token, e) for e in entries]
    block: dict[str, Any] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    for token, entry in rows:
        piece = decode([token])
        block["tokens"].append(piece)
        block["text_offset"].append(offset)
        offset += len(piece)
        block["token_logprobs"].append(None if entry is None else entry.logprob)
        block["top_logprobs"].append(None if entry is None else {decode([t]): lp for t, lp in entry.top})
    return block


async def _stream(call: MeteredCall, model: ServedModel, generations: list[GenerationRequest],
                  req: CompletionRequest) -> AsyncIterator[bytes]:
    """text_completion chunks of every choice, interleaved by `index`; usage on the very last."""
    def event(index: int, text: str, logprobs: Any, finish_reason: str | None, usage: dict | None = None
              ) -> bytes:
        body: dict[str, Any] = {
            "id": call.id, "object": "text_completion", "created": call.created, "model": model.id,
            "choices": [{"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish_reason}]}
        if usage is not None:
            body["usage"] = usage
        return sse(body)

    started, offsets = [False] * len(generations), [0] * len(generations)
    open_choices = len(generations)
    async with contextlib.aclosing(metered_streams(call, model, generations)) as outputs:
        async for index, output in outputs:  # each billed before it is sent
            text, echo_prompt = output.text, None
            if req.echo and not started[index]:
                prompt = generations[index].prompt_ids
                text, echo_prompt = model.tokenizer.decode(prompt) + text, prompt
            started[index] = True
            logprobs = None
            if req.logprobs is not None:
                logprobs = logprob_block(model, echo_prompt, output.prompt_logprobs, output.logprobs,
                                         offsets[index])
                offsets[index] += len(text)
            if text or logprobs:
                yield event(index, text, logprobs, None)
            if output.finish_reason:
                open_choices -= 1
                yield event(index, "", None, _finish_reason(output.finish_reason),
                            usage=call.usage() if not open_choices else None)
    yield DONE
