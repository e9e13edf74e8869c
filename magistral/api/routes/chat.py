"""POST /v1/chat/completions: validate → prompt → metered call → engine → (SSE | JSON)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse
from mistral_common.exceptions import MistralCommonException
from starlette.concurrency import run_in_threadpool

from magistral.api.auth import require_key
from magistral.api.content import assistant_message, chat_logprobs, segment_delta
from magistral.api.errors import APIError
from magistral.api.schemas import ChatCompletionRequest
from magistral.api.serving import (
    Choice,
    check_prompt,
    check_sampling_options,
    find_model,
    generate_all,
    metered_streams,
    sampling,
)
from magistral.api.streaming import DONE, SSE_HEADERS, chunk
from magistral.api.structured import OutputPlan, constraints, output_plan, upstream_fields
from magistral.api.validation import check_capabilities, check_message_order
from magistral.chat.images import ImageError, load_image
from magistral.chat.prompt import EncodedPrompt
from magistral.chat.reasoning import ReasoningSplitter, Segment
from magistral.chat.tools import ParsedCall, ToolCallSplitter
from magistral.engine.engine import GenerationRequest
from magistral.engine.grammar import Constraint
from magistral.engine.registry import ServedModel
from magistral.engine.sampling import SamplingParams
from magistral.platform.calls import MeteredCall
from magistral.platform.gateway import Platform
from magistral.platform.keys import KeyInfo

router = APIRouter()


def _sampling(req: ChatCompletionRequest, model: ServedModel, seed: int | None) -> SamplingParams:
    return sampling(model, req.temperature, req.top_p, req.max_tokens, seed, req.stop,
                    presence_penalty=req.presence_penalty, frequency_penalty=req.frequency_penalty,
                    logprobs=(req.top_logprobs or 0) if req.logprobs else None, **req.sampling_options())


def _image_chunks(messages: list[dict[str, Any]], request: Request) -> list[dict[str, Any]]:
    policy = request.app.state.image_policy
    chunks = [c for m in messages if isinstance(m.get("content"), list) for c in m["content"]
              if c["type"] == "image_url"]
    if len(chunks) > policy.max_images:
        raise APIError(400, f"{len(chunks)} images in one request; the limit is {policy.max_images}",
                       param="messages")
    return chunks


async def _load_images(chunks: list[dict[str, Any]], request: Request) -> None:
    """Replace every image_url chunk by the decoded, checked image (in place)."""
    policy = request.app.state.image_policy
    try:
        async with asyncio.timeout(policy.request_deadline):
            for part in chunks:
                url = part["image_url"] if isinstance(part["image_url"], str) else part["image_url"]["url"]
                try:
                    image = await load_image(url, policy)
                except ImageError as exc:
                    raise APIError(exc.status, f"Invalid image: {exc}", param="messages") from exc
                part.clear()
                part.update(type="image", image=image)
    except TimeoutError as exc:
        raise APIError(400, f"Loading the request's images took longer than {policy.request_deadline:g} s",
                       param="messages") from exc


def _prompt_estimate(messages: list[dict[str, Any]], plan: OutputPlan, model: ServedModel,
                     images: int) -> int:
    """An upper bound on the prompt's tokens before its images are loaded: a byte-level BPE
    token is at least one byte of text, plus the largest grid each image can become, plus room
    for the template and the reasoning system prompt."""
    text = json.dumps([m.get("content") for m in messages if isinstance(m.get("content"), str)])
    chunks = json.dumps([c for m in messages if isinstance(m.get("content"), list) for c in m["content"]
                         if c["type"] != "image_url"])
    tools = json.dumps(plan.tools) if plan.tools else ""
    estimate = (len(text.encode()) + len(chunks.encode()) + len(tools.encode()) + 1024
                + images * model.max_image_tokens)
    return min(estimate, model.max_context_length)


@dataclass
class Prepared:
    model: ServedModel
    prompt: EncodedPrompt
    plan: OutputPlan
    reasoning_output: str  # "mistral" (thinking chunks) or "openai" (reasoning_content)
    grammars: list[Constraint | None]
    call: MeteredCall


async def _prepare(req: ChatCompletionRequest, request: Request, key: KeyInfo) -> Prepared:
    """Checks, prompt, grammars and the metered call. A request with images is admitted under
    its key's limits (with an upper-bound estimate of its prompt) before any image is fetched or
    decoded, so a key at its limit costs the server nothing; the estimate is corrected once the
    prompt is known, and a request refused after admission is billed nothing."""
    model = find_model(request, req.model)
    check_sampling_options(req, model)
    if req.reasoning_effort is not None:
        raise APIError(400, "reasoning_effort is not supported: reasoning models think by default; "
                       "prompt_mode steers their system prompt", param="reasoning_effort")
    if req.top_logprobs is not None and not req.logprobs:
        raise APIError(400, "top_logprobs needs logprobs: true", param="top_logprobs")
    check_message_order(req)
    check_capabilities(req, model)
    plan = output_plan(req, model)
    messages = [m.model_dump(exclude_none=True) for m in req.messages]
    images = _image_chunks(messages, request)
    platform: Platform = request.app.state.platform

    def admit(prompt_tokens: int) -> MeteredCall:
        return platform.open_call(key, model.id, prompt_tokens, max_tokens=req.max_tokens, n=req.n,
                                  max_context=model.max_context_length)

    call = admit(_prompt_estimate(messages, plan, model, len(images))) if images else None
    try:
        await _load_images(images, request)
        try:
            prompt = await run_in_threadpool(model.encode_chat, messages,
                                             reasoning_prompt=req.wants_reasoning_prompt,
                                             safe_prompt=req.safe_prompt, tools=plan.tools or None)
        except (ValueError, MistralCommonException) as exc:
            raise APIError(400, f"Invalid messages: {exc}", param="messages") from exc
        check_prompt(model, prompt.ids, param="messages")
        grammars = await constraints(plan, model, req.n)
    except Exception:
        if call is not None:
            await call.void("rejected")
        raise
    except BaseException:  # cancelled: no await
        if call is not None:
            call.prompt_tokens = 0
            call.abandon(0, "rejected")
        raise
    if call is None:
        call = admit(len(prompt.ids))
    else:
        call.prompt_tokens = len(prompt.ids)
    return Prepared(model, prompt, plan, req.reasoning_format or request.app.state.reasoning_output,
                    grammars, call)


@router.post("/v1/chat/completions")
async def chat_completions(req: ChatCompletionRequest, request: Request,
                           key: KeyInfo = Depends(require_key)) -> Any:
    prep = await _prepare(req, request, key)
    model, prompt, call = prep.model, prep.prompt, prep.call
    seeds = [None if req.random_seed is None else req.random_seed + i for i in range(req.n)]
    chat = {**prompt.chat, **upstream_fields(req)} if prompt.chat is not None else None
    generations = [GenerationRequest(prompt.ids, _sampling(req, model, seed), prompt.images,
                                     constraint=grammar, chat=chat)
                   for seed, grammar in zip(seeds, prep.grammars, strict=True)]
    if req.stream:
        return StreamingResponse(_stream(call, prep, generations, req.logprobs),
                                 media_type="text/event-stream", headers={**SSE_HEADERS, **call.headers})
    choices = await generate_all(call, model, generations, request)
    return JSONResponse(headers=call.headers, content={
        "id": call.id, "object": "chat.completion", "created": call.created, "model": model.id,
        "usage": call.usage(),
        "choices": [_choice(prep, i, c, req.logprobs) for i, c in enumerate(choices)],
    })


def _choice(prep: Prepared, index: int, choice: Choice, logprobs: bool) -> dict[str, Any]:
    text, calls = prep.plan.read(prep.model, choice.text)
    return {"index": index, "finish_reason": "tool_calls" if calls else choice.finish_reason,
            "message": assistant_message(text, prep.model.reasoning, prep.reasoning_output,
                                         [c.api(i) for i, c in enumerate(calls)]),
            "logprobs": chat_logprobs(prep.model.tokenizer.decode, choice.logprobs) if logprobs else None}


class _ChoiceStream:
    """One choice's text → deltas: tool calls held back for parsing at the end, reasoning traces
    split out (reasoning models only: other models' text is text, <think> included)."""

    def __init__(self, prep: Prepared):
        self.prep = prep
        self.calls = ToolCallSplitter(prep.model.prompter.tool_format.trigger) \
            if prep.plan.calls_possible else None
        self.reasoning = ReasoningSplitter() if prep.model.reasoning else None

    def _segments(self, text: str, final: bool) -> list[Segment]:
        if self.reasoning is None:
            return [Segment("text", text)] if text else []
        return self.reasoning.feed(text) + (self.reasoning.flush() if final else [])

    def feed(self, text: str, final: bool) -> tuple[list[dict[str, Any]], list[ParsedCall]]:
        calls: list[ParsedCall] = []
        if self.calls is not None:
            text = self.calls.feed(text)
            if final:
                text += self.calls.flush()
                if self.calls.calling:
                    rest, calls = self.prep.plan.read(self.prep.model, self.calls.held)
                    text += rest  # an unfinished call (max_tokens) stays text
        style = self.prep.reasoning_output
        return [segment_delta(s, style) for s in self._segments(text, final)], calls


async def _stream(call: MeteredCall, prep: Prepared, generations: list[GenerationRequest], logprobs: bool
                  ) -> AsyncIterator[bytes]:
    """Chunks of every choice, interleaved by `index`; usage rides on the very last one."""
    model = prep.model
    streams = [_ChoiceStream(prep) for _ in generations]
    open_choices = len(generations)
    for index in range(len(generations)):
        yield chunk(call.id, call.created, model.id, {"role": "assistant", "content": ""}, index=index)
    async with contextlib.aclosing(metered_streams(call, model, generations)) as outputs:
        async for index, output in outputs:  # each billed before it is sent
            deltas, calls = streams[index].feed(output.text, final=bool(output.finish_reason))
            entries = chat_logprobs(model.tokenizer.decode, output.logprobs) if logprobs else None
            if entries and entries["content"] and not deltas:  # text held back: logprobs still go
                deltas = [{"content": ""}]
            for i, delta in enumerate(deltas):  # an output's logprobs ride on its first piece
                yield chunk(call.id, call.created, model.id, delta,
                            logprobs=entries if i == 0 else None, index=index)
            if calls:  # each call whole, in one delta, as Mistral sends them
                delta = {"content": "", "tool_calls": [c.api(i) for i, c in enumerate(calls)]}
                yield chunk(call.id, call.created, model.id, delta, index=index)
            if output.finish_reason:
                open_choices -= 1
                usage = call.usage() if not open_choices else None  # on the very last chunk, as billed
                yield chunk(call.id, call.created, model.id, {"content": ""}, index=index,
                            finish_reason="tool_calls" if calls else output.finish_reason, usage=usage)
    yield DONE
