"""POST /v1/chat/completions: validate → prompt → engine → (SSE | JSON), metered."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse
from mistral_common.exceptions import MistralCommonException
from starlette.concurrency import run_in_threadpool

from magistral.api.auth import require_key
from magistral.api.content import assistant_message, segment_delta
from magistral.api.errors import APIError
from magistral.api.schemas import ChatCompletionRequest
from magistral.api.streaming import DONE, chunk
from magistral.api.validation import check_capabilities, check_message_order
from magistral.chat.images import ImageError, load_image
from magistral.chat.prompt import EncodedPrompt
from magistral.chat.reasoning import ReasoningSplitter
from magistral.engine.engine import GenerationRequest
from magistral.engine.registry import ServedModel
from magistral.engine.sampling import SamplingParams
from magistral.platform.keys import KeyInfo
from magistral.platform.metering import Usage, record_usage

router = APIRouter()
log = logging.getLogger("magistral.api")
DISCONNECT_POLL_S = 0.25  # how often a non-streamed request checks that its client is still there


class _Call:
    """One accepted request: its prompt, its clock, and its single usage row."""

    def __init__(self, request: Request, key: KeyInfo, model: ServedModel, prompt: EncodedPrompt):
        self.id = uuid.uuid4().hex
        self.created = int(time.time())
        self.started = time.perf_counter()
        self.store = request.app.state.store
        self.key, self.model, self.prompt = key, model, prompt
        self.prompt_ids = prompt.ids
        self.metered = False

    def meter(self, completion_tokens: int, status: str) -> None:
        """Write the usage row (once). Synchronous on purpose: it must land even while the
        request's task is being cancelled by a client that hung up."""
        if self.metered:
            return
        self.metered = True
        record_usage(self.store, Usage(
            request_id=self.id, key_id=self.key.id, model=self.model.id,
            prompt_tokens=len(self.prompt_ids), completion_tokens=completion_tokens,
            status=status, latency_ms=int((time.perf_counter() - self.started) * 1000)))

    def usage(self, completion_tokens: int) -> dict[str, int]:
        prompt = len(self.prompt_ids)
        return {"prompt_tokens": prompt, "completion_tokens": completion_tokens,
                "total_tokens": prompt + completion_tokens}


def _sampling(req: ChatCompletionRequest, model: ServedModel, seed: int | None) -> SamplingParams:
    temperature = model.default_temperature if req.temperature is None else req.temperature
    return SamplingParams(temperature=temperature, top_p=req.top_p, max_tokens=req.max_tokens,
                          seed=seed, stop=req.stop_list, presence_penalty=req.presence_penalty,
                          frequency_penalty=req.frequency_penalty)


async def _load_images(messages: list[dict[str, Any]], request: Request) -> None:
    """Replace every image_url chunk by the decoded, checked image (in place)."""
    policy = request.app.state.image_policy
    chunks = [c for m in messages if isinstance(m.get("content"), list) for c in m["content"]
              if c["type"] == "image_url"]
    if len(chunks) > policy.max_images:
        raise APIError(400, f"{len(chunks)} images in one request; the limit is {policy.max_images}",
                       param="messages")
    for part in chunks:
        url = part["image_url"] if isinstance(part["image_url"], str) else part["image_url"]["url"]
        try:
            image = await load_image(url, policy)
        except ImageError as exc:
            raise APIError(exc.status, f"Invalid image: {exc}", param="messages") from exc
        part.clear()
        part.update(type="image", image=image)


async def _prepare(req: ChatCompletionRequest, request: Request) -> tuple[ServedModel, EncodedPrompt]:
    model = request.app.state.registry.get(req.model)
    if model is None:
        raise APIError(404, f"Invalid model: '{req.model}' not found", param="model",
                       code="model_not_found")
    check_message_order(req)
    check_capabilities(req, model)
    messages = [m.model_dump(exclude_none=True) for m in req.messages]
    await _load_images(messages, request)
    try:
        prompt = await run_in_threadpool(model.encode_chat, messages,
                                         reasoning_prompt=req.wants_reasoning_prompt,
                                         safe_prompt=req.safe_prompt)
    except (ValueError, MistralCommonException) as exc:
        raise APIError(400, f"Invalid messages: {exc}", param="messages") from exc
    if len(prompt.ids) >= model.max_context_length:
        raise APIError(400, f"Prompt contains {len(prompt.ids)} tokens, too large for model "
                       f"'{model.id}' with {model.max_context_length} maximum context length",
                       param="messages", code="context_length_exceeded")
    return model, prompt


@router.post("/v1/chat/completions")
async def chat_completions(req: ChatCompletionRequest, request: Request,
                           key: KeyInfo = Depends(require_key)) -> Any:
    model, prompt = await _prepare(req, request)
    call = _Call(request, key, model, prompt)
    if req.stream:
        return StreamingResponse(_stream(call, req), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    return await _complete(call, req, request)


async def _run_one(call: _Call, params: SamplingParams, progress: list[int], index: int
                   ) -> tuple[str, str, int]:
    text, finish = "", "error"
    generation = call.model.engine.generate(GenerationRequest(call.prompt_ids, params, call.prompt.images))
    async with contextlib.aclosing(generation) as outputs:
        async for output in outputs:
            text += output.text
            progress[index] = output.completion_tokens
            if output.finish_reason:
                finish = output.finish_reason
            if output.error:
                log.error("request %s: engine error: %s", call.id, output.error)
    return text, finish, progress[index]


async def _complete(call: _Call, req: ChatCompletionRequest, request: Request) -> JSONResponse:
    seeds = [None if req.random_seed is None else req.random_seed + i for i in range(req.n)]
    progress = [0] * req.n
    work = asyncio.ensure_future(asyncio.gather(
        *(_run_one(call, _sampling(req, call.model, s), progress, i) for i, s in enumerate(seeds))))
    try:
        while not (await asyncio.wait({work}, timeout=DISCONNECT_POLL_S))[0]:
            if await request.is_disconnected():  # nobody is waiting: stop generating
                work.cancel()
                call.meter(sum(progress), "disconnected")
                return JSONResponse({}, status_code=499)
        results = work.result()
    except BaseException:
        work.cancel()
        call.meter(sum(progress), "error")
        raise
    completion_tokens = sum(tokens for _, _, tokens in results)
    failed = any(finish == "error" for _, finish, _ in results)
    call.meter(completion_tokens, "error" if failed else results[0][1])
    if failed:
        raise APIError(500, "Generation failed inside the engine")
    return JSONResponse({
        "id": call.id, "object": "chat.completion", "created": call.created, "model": call.model.id,
        "usage": call.usage(completion_tokens),
        "choices": [{"index": i, "finish_reason": finish, "message": assistant_message(text)}
                    for i, (text, finish, _) in enumerate(results)],
    })


async def _stream(call: _Call, req: ChatCompletionRequest) -> AsyncIterator[bytes]:
    model_id = call.model.id
    splitter = ReasoningSplitter()
    tokens, status = 0, "disconnected"
    generation = call.model.engine.generate(
        GenerationRequest(call.prompt_ids, _sampling(req, call.model, req.random_seed), call.prompt.images))
    try:
        yield chunk(call.id, call.created, model_id, {"role": "assistant", "content": ""})
        async with contextlib.aclosing(generation) as outputs:
            async for output in outputs:
                tokens = output.completion_tokens
                segments = splitter.feed(output.text)
                if output.finish_reason:
                    segments += splitter.flush()
                for seg in segments:
                    yield chunk(call.id, call.created, model_id, segment_delta(seg))
                if output.error:
                    log.error("request %s: engine error: %s", call.id, output.error)
                if output.finish_reason:
                    status = output.finish_reason
                    call.meter(tokens, status)  # durable before the client sees the end
                    yield chunk(call.id, call.created, model_id, {"content": ""},
                                finish_reason=status, usage=call.usage(tokens))
        yield DONE
    finally:
        call.meter(tokens, status)
