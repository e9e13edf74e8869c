"""The serving layer every generating endpoint shares: engine outputs under a metered call.

Whole answers (`generate_all`): every choice runs to its end while the client is polled; the
final usage row is durable before the answer is returned. Streams (`metered_stream`): each
output is billed (checkpoint) before the caller may send it, and the last one is finished
before the caller sends the end. Routes only turn these outputs into their own JSON or SSE, and
read the usage billed from the call (`call.usage()`).

Both count a reasoning model's thinking tokens here, in `_Spend`, the one place that sees every
output of every choice; other models' are 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from magistral.api.errors import APIError, ClientGone
from magistral.chat.reasoning import ThinkingCounter
from magistral.engine.engine import GenerationOutput, GenerationRequest
from magistral.engine.registry import ServedModel
from magistral.engine.sampling import SamplingParams, TokenLogprob
from magistral.platform.calls import MeteredCall

log = logging.getLogger("magistral.api")
DISCONNECT_POLL_S = 0.25  # how often a non-streamed request checks that its client is still there


def sampling(model: ServedModel, temperature: float | None, top_p: float, max_tokens: int | None,
             seed: int | None, stop: str | list[str] | None, **extra: Any) -> SamplingParams:
    stops = [] if stop is None else [stop] if isinstance(stop, str) else list(stop)
    return SamplingParams(temperature=model.default_temperature if temperature is None else temperature,
                          top_p=top_p, max_tokens=max_tokens, seed=seed, stop=stops, **extra)


def check_sampling_options(req: Any, model: ServedModel) -> None:
    """logit_bias names tokens of this model's vocabulary; upstream models (whose vocabulary is
    the upstream's) take neither logit_bias nor logprobs."""
    if getattr(model.prompter, "upstream", False):
        for name in ("logit_bias", "logprobs"):
            if getattr(req, name, None):
                raise APIError(400, f"{name} is not available for model '{model.id}', which is served "
                               "by an upstream server", param=name)
    vocab = model.tokenizer.vocab_size
    outside = [t for t in (req.logit_bias or {}) if not 0 <= t < vocab]
    if outside:
        raise APIError(400, f"logit_bias names token {outside[0]}, outside the vocabulary [0, {vocab})",
                       param="logit_bias")


def check_prompt(model: ServedModel, ids: list[int], param: str = "prompt") -> None:
    if not ids:
        raise APIError(400, "Prompt is empty", param=param)
    if len(ids) >= model.max_context_length:
        raise APIError(400, f"Prompt contains {len(ids)} tokens, too large for model '{model.id}' with "
                       f"{model.max_context_length} maximum context length", param=param,
                       code="context_length_exceeded")


def find_model(request: Request, name: str) -> ServedModel:
    registry = request.app.state.registry
    model = registry.get(name)
    if model is None:
        if registry.get_embedder(name) is not None:
            raise APIError(400, f"Model '{name}' makes embeddings, not completions", param="model")
        raise APIError(404, f"Invalid model: '{name}' not found", param="model", code="model_not_found")
    return model


def find_local_model(request: Request, name: str, route: str) -> ServedModel:
    """find_model for routes that work on token ids: upstream models (which see only chat
    requests, in their own vocabulary) are refused by name."""
    model = find_model(request, name)
    if getattr(model.prompter, "upstream", False):
        raise APIError(400, f"Model '{model.id}' is served by an upstream server: it answers "
                       f"/v1/chat/completions only, not {route}", param="model")
    return model


class _Spend:
    """The tokens one call's choices have generated so far: completion tokens and, of those,
    thinking tokens (for reasoning models: counted from each choice's outputs in order)."""

    def __init__(self, model: ServedModel, choices: int):
        self.completion = [0] * choices
        self.counters = [ThinkingCounter() if model.reasoning else None for _ in range(choices)]

    def add(self, index: int, output: GenerationOutput) -> None:
        self.completion[index] = output.completion_tokens
        counter = self.counters[index]
        if counter is not None:
            counter.feed(output.text, output.completion_tokens)

    def totals(self) -> tuple[int, int]:
        """(completion tokens, thinking tokens) of all choices."""
        return sum(self.completion), sum(c.tokens for c in self.counters if c is not None)


@dataclass
class Choice:
    text: str = ""
    finish_reason: str = "error"
    completion_tokens: int = 0
    logprobs: list[TokenLogprob] = field(default_factory=list)
    prompt_logprobs: list[TokenLogprob | None] | None = None


async def _run_one(call: MeteredCall, model: ServedModel, request: GenerationRequest, choice: Choice,
                   spend: _Spend, index: int) -> None:
    generation = model.engine.generate(request)
    async with contextlib.aclosing(generation) as outputs:
        async for output in outputs:
            spend.add(index, output)
            choice.text += output.text
            choice.completion_tokens = output.completion_tokens
            choice.logprobs += output.logprobs
            if output.prompt_logprobs is not None:
                choice.prompt_logprobs = output.prompt_logprobs
            if output.prompt_tokens is not None:  # an upstream's own count replaces our estimate
                call.prompt_tokens = output.prompt_tokens
            if output.finish_reason:
                choice.finish_reason = output.finish_reason
            if output.error:
                log.error("request %s: engine error: %s", call.id, output.error)


async def generate_all(call: MeteredCall, model: ServedModel, requests: list[GenerationRequest],
                       client: Request) -> list[Choice]:
    """Run every request to its end (one per choice) and finish the call, durably, before
    returning. Raises ClientGone when the client hangs up (generation stops, the tokens made so
    far are billed) and APIError 500 when the engine fails."""
    choices = [Choice() for _ in requests]
    spend = _Spend(model, len(requests))
    work = asyncio.ensure_future(asyncio.gather(*(_run_one(call, model, r, c, spend, i) for i, (r, c)
                                                  in enumerate(zip(requests, choices, strict=True)))))

    def abandon(status: str) -> None:
        completion, thinking = spend.totals()
        call.abandon(completion, status, thinking_tokens=thinking)

    try:
        while not (await asyncio.wait({work}, timeout=DISCONNECT_POLL_S))[0]:
            if await client.is_disconnected():  # nobody is waiting: stop generating
                work.cancel()
                abandon("disconnected")
                raise ClientGone
        work.result()
    except ClientGone:
        raise
    except BaseException:
        work.cancel()
        abandon("error")
        raise
    if any(c.finish_reason == "error" for c in choices):
        await call.void("error")  # the client gets no tokens: a retry must not pay twice
        raise APIError(500, "Generation failed inside the engine")
    completion, thinking = spend.totals()
    await call.finish(completion, choices[0].finish_reason, thinking_tokens=thinking)
    return choices


async def metered_streams(call: MeteredCall, model: ServedModel, requests: list[GenerationRequest]
                          ) -> AsyncIterator[tuple[int, GenerationOutput]]:
    """The outputs of several generations of one call (its choices), interleaved as they come,
    as (choice index, output). Each is billed (the call's total so far) before it is yielded,
    and the one that ends the last open choice is the call's final, durable state. When the
    engine or the usage journal fails, every open choice gets a last output with finish_reason
    "error" (and no new text), so the client sees a proper end; the call is billed for the
    tokens already sent, or nothing if none were. If the consumer stops early (client gone), the
    generations are cancelled and the call is abandoned with what was generated."""
    queue: asyncio.Queue[tuple[int, GenerationOutput | Exception]] = asyncio.Queue()

    async def pump(index: int, request: GenerationRequest) -> None:
        try:
            async with contextlib.aclosing(model.engine.generate(request)) as outputs:
                async for output in outputs:
                    await queue.put((index, output))
        except Exception as exc:
            await queue.put((index, exc))

    spend, ended, statuses = _Spend(model, len(requests)), [False] * len(requests), []
    sent, status = (0, 0), "disconnected"  # (completion, thinking) tokens the client has
    tasks = [asyncio.ensure_future(pump(i, r)) for i, r in enumerate(requests)]
    try:
        try:
            while not all(ended):
                index, item = await queue.get()
                if isinstance(item, Exception):
                    raise item
                spend.add(index, item)
                if item.prompt_tokens is not None:  # an upstream's own count replaces our estimate
                    call.prompt_tokens = item.prompt_tokens
                if item.error:
                    log.error("request %s: engine error: %s", call.id, item.error)
                if item.finish_reason:
                    ended[index] = True
                    statuses.append(item.finish_reason)
                completion, thinking = spend.totals()
                if all(ended):
                    status = "error" if "error" in statuses else statuses[0]
                    await call.finish(completion, status, thinking_tokens=thinking)
                else:
                    await call.checkpoint(completion, thinking_tokens=thinking)
                sent = completion, thinking
                yield index, item
        except Exception as exc:  # the stream has started: end it cleanly instead of dropping it
            log.exception("request %s: stream failed", call.id)
            if not sent[0]:
                call.prompt_tokens = 0  # nothing reached the client: nothing is billed
            call.abandon(sent[0], "error", thinking_tokens=sent[1])  # else billed for what the client has
            for index in (i for i, done in enumerate(ended) if not done):
                yield index, GenerationOutput(text="", completion_tokens=spend.completion[index],
                                              finish_reason="error", error=f"{type(exc).__name__}: {exc}")
    finally:
        for task in tasks:
            task.cancel()
        completion, thinking = spend.totals()
        call.abandon(completion, status, thinking_tokens=thinking)


async def metered_stream(call: MeteredCall, model: ServedModel, request: GenerationRequest
                         ) -> AsyncIterator[GenerationOutput]:
    """`metered_streams` for a call with a single choice."""
    async with contextlib.aclosing(metered_streams(call, model, [request])) as outputs:
        async for _, output in outputs:
            yield output
