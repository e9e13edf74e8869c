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
from magistral.platform.gateway import Platform
from magistral.platform.keys import KeyInfo
from magistral.platform.metering import IN_PROGRESS, Usage

router = APIRouter()
log = logging.getLogger("magistral.api")
DISCONNECT_POLL_S = 0.25  # how often a non-streamed request checks that its client is still there


class _Call:
    """One accepted request: its prompt, its clock, its rate-limit reservation and its single
    usage row, which is committed before the client sees any token it counts."""

    def __init__(self, request: Request, key: KeyInfo, model: ServedModel, prompt: EncodedPrompt):
        self.id = uuid.uuid4().hex
        self.created = int(time.time())
        self.started = time.perf_counter()
        self.platform: Platform = request.app.state.platform
        self.key, self.model, self.prompt = key, model, prompt
        self.prompt_ids = prompt.ids
        self.metered = False
        self.first_token_at: float | None = None

    def _usage(self, completion_tokens: int, status: str) -> Usage:
        return Usage(request_id=self.id, account_id=self.key.account_id, key_id=self.key.id,
                     model=self.model.id, prompt_tokens=len(self.prompt_ids),
                     completion_tokens=completion_tokens, status=status, replica=self.platform.replica,
                     latency_ms=int((time.perf_counter() - self.started) * 1000))

    async def checkpoint(self, completion_tokens: int) -> None:
        """Bill the tokens generated so far before sending them (streams)."""
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
            self.platform.metrics.ttft.labels(self.model.id).observe(self.first_token_at - self.started)
        if self.platform.enabled:
            await self.platform.journal.write(self._usage(completion_tokens, IN_PROGRESS))

    async def meter(self, completion_tokens: int, status: str) -> None:
        """The final state of the row, durable when this returns; settles the reservation."""
        if not self._close(completion_tokens, status):
            return
        if self.platform.enabled:
            await self.platform.journal.write(self._usage(completion_tokens, status))

    def meter_nowait(self, completion_tokens: int, status: str) -> None:
        """The same for a request being torn down (its task may be cancelled: nothing awaits)."""
        if self._close(completion_tokens, status) and self.platform.enabled:
            self.platform.journal.write_nowait(self._usage(completion_tokens, status))

    def _close(self, completion_tokens: int, status: str) -> bool:
        if self.metered:
            return False
        self.metered = True
        if self.platform.enabled:
            self.platform.limiter.settle(self.key.id, self.id, len(self.prompt_ids) + completion_tokens)
        self.platform.metrics.observe_request(self.model.id, status, len(self.prompt_ids), completion_tokens,
                                              time.perf_counter() - self.started)
        return True

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
    headers = _admit(call, req)
    if req.stream:
        return StreamingResponse(_stream(call, req), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **headers})
    return await _complete(call, req, request, headers)


def _admit(call: _Call, req: ChatCompletionRequest) -> dict[str, str]:
    """Reserve the request's tokens under its key's limits (429 when they do not fit)."""
    platform = call.platform
    if not platform.enabled:
        return {}
    prompt = len(call.prompt_ids)
    room = call.model.max_context_length - prompt
    wanted = req.max_tokens if req.max_tokens is not None else platform.config.max_reserve_tokens
    per_choice = min(room, wanted)
    reserve = prompt + req.n * max(0, per_choice)
    decision = platform.admit(call.key, call.id, reserve)
    if decision.allowed:
        return decision.headers()
    if decision.reason == "tokens" and reserve > decision.limit_tokens:
        message = (f"Rate limit exceeded: this request reserves {reserve} tokens (prompt + max_tokens), more "
                   f"than this key's {decision.limit_tokens} tokens per minute; lower max_tokens")
    elif decision.reason == "tokens":
        message = (f"Rate limit exceeded: {decision.limit_tokens} tokens per minute for this key; "
                   f"this request reserves {reserve}, {max(0, decision.remaining_tokens)} remain")
    else:
        message = f"Rate limit exceeded: {decision.limit_requests} requests per minute for this key"
    raise APIError(429, message, code=f"rate_limit_{decision.reason}", headers=decision.headers())


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


async def _complete(call: _Call, req: ChatCompletionRequest, request: Request, headers: dict[str, str]
                    ) -> JSONResponse:
    seeds = [None if req.random_seed is None else req.random_seed + i for i in range(req.n)]
    progress = [0] * req.n
    work = asyncio.ensure_future(asyncio.gather(
        *(_run_one(call, _sampling(req, call.model, s), progress, i) for i, s in enumerate(seeds))))
    try:
        while not (await asyncio.wait({work}, timeout=DISCONNECT_POLL_S))[0]:
            if await request.is_disconnected():  # nobody is waiting: stop generating
                work.cancel()
                call.meter_nowait(sum(progress), "disconnected")
                return JSONResponse({}, status_code=499)
        results = work.result()
    except BaseException:
        work.cancel()
        call.meter_nowait(sum(progress), "error")
        raise
    completion_tokens = sum(tokens for _, _, tokens in results)
    failed = any(finish == "error" for _, finish, _ in results)
    await call.meter(completion_tokens, "error" if failed else results[0][1])  # durable before the answer
    if failed:
        raise APIError(500, "Generation failed inside the engine")
    return JSONResponse(headers=headers, content={
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
                if output.error:
                    log.error("request %s: engine error: %s", call.id, output.error)
                if output.finish_reason:  # durable before the client sees the rest and the end
                    status = output.finish_reason
                    await call.meter(tokens, status)
                elif segments:
                    await call.checkpoint(tokens)  # billed before it is sent
                for seg in segments:
                    yield chunk(call.id, call.created, model_id, segment_delta(seg))
                if output.finish_reason:
                    yield chunk(call.id, call.created, model_id, {"content": ""},
                                finish_reason=status, usage=call.usage(tokens))
        yield DONE
    finally:
        call.meter_nowait(tokens, status)
