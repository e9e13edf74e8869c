"""The generation engine: an async front over one worker thread that owns the model.

Requests wait in a queue; up to `max_active` sequences are in flight at once and the worker
steps them in turn (prefill, then one token each per round), so every stream makes progress.
A consumer that stops listening (client hung up) marks its sequence cancelled and the worker
drops it before the next step.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

import torch

from magistral.chat.tokenizer import IncrementalDecoder
from magistral.engine.sampling import Sampler, SamplingParams
from magistral.engine.stops import StopMatcher
from magistral.model.cache import KVCache
from magistral.model.transformer import Transformer

PREFILL_CHUNK = 512  # prompt tokens per forward: bounds activation memory on long prompts


class Detokenizer(Protocol):
    stop_ids: set[int]

    def decode(self, ids: list[int]) -> str: ...


@dataclass
class GenerationRequest:
    prompt_ids: list[int]
    params: SamplingParams
    images: list[torch.Tensor] = field(default_factory=list)  # for the [IMG] positions, in order


@dataclass
class GenerationOutput:
    """One increment of a generation: new text and, on the last one, why it ended."""
    text: str
    completion_tokens: int
    finish_reason: str | None = None  # stop | length | model_length | error
    error: str | None = None


@dataclass
class _Sequence:
    request: GenerationRequest
    loop: asyncio.AbstractEventLoop
    outputs: asyncio.Queue
    sampler: Sampler
    decoder: IncrementalDecoder
    stops: StopMatcher
    cache: KVCache | None = None
    embeddings: torch.Tensor | None = None  # (1, prompt, dim) when the prompt has images
    position: int = 0
    generated: list[int] = field(default_factory=list)
    next_token: int | None = None
    cancelled: bool = False

    def emit(self, output: GenerationOutput) -> None:
        self.loop.call_soon_threadsafe(self.outputs.put_nowait, output)


class Engine:
    def __init__(self, model: Transformer, tokenizer: Detokenizer, max_active: int = 8):
        self.model = model
        self.tokenizer = tokenizer
        self.max_context = model.args.max_seq_len
        self.max_active = max_active
        self._incoming: queue.Queue[_Sequence] = queue.Queue()
        self._active: list[_Sequence] = []
        self._wake = threading.Event()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="magistral-engine", daemon=True)
        self._thread.start()

    @property
    def active_count(self) -> int:
        return len(self._active)

    @property
    def queued_count(self) -> int:
        return self._incoming.qsize()

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationOutput]:
        """Yield outputs until one carries a finish_reason. Closing the iterator cancels."""
        if not request.prompt_ids:
            raise ValueError("empty prompt")
        if len(request.prompt_ids) >= self.max_context:
            raise ValueError(f"prompt of {len(request.prompt_ids)} tokens does not fit the "
                             f"context of {self.max_context}")
        seq = _Sequence(request=request, loop=asyncio.get_running_loop(), outputs=asyncio.Queue(),
                        sampler=Sampler(request.params, self.model.args.vocab_size),
                        decoder=IncrementalDecoder(self.tokenizer),
                        stops=StopMatcher(request.params.stop))
        self._incoming.put(seq)
        self._wake.set()
        try:
            while True:
                output = await seq.outputs.get()
                yield output
                if output.finish_reason is not None:
                    return
        finally:
            seq.cancelled = True
            self._wake.set()

    def shutdown(self) -> None:
        self._stopped = True
        self._wake.set()
        self._thread.join(timeout=5)

    # --- worker thread -------------------------------------------------------------------

    def _run(self) -> None:
        with torch.inference_mode():
            while not self._stopped:
                self._admit()
                if not self._active:
                    self._wake.wait(timeout=0.5)
                    self._wake.clear()
                    continue
                for seq in list(self._active):
                    if seq.cancelled:
                        self._active.remove(seq)
                        continue
                    try:
                        self._step(seq)
                    except Exception as exc:  # one bad sequence must not stop the others
                        self._finish(seq, "error", error=f"{type(exc).__name__}: {exc}")

    def _admit(self) -> None:
        while len(self._active) < self.max_active:
            try:
                seq = self._incoming.get_nowait()
            except queue.Empty:
                return
            if not seq.cancelled:
                self._active.append(seq)

    def _capacity(self, seq: _Sequence) -> int:
        wanted = len(seq.request.prompt_ids) + (seq.request.params.max_tokens or self.max_context)
        return min(wanted, self.max_context)

    def _step(self, seq: _Sequence) -> None:
        if seq.cache is None:
            initial = min(self._capacity(seq), len(seq.request.prompt_ids) + 256)
            seq.cache = KVCache(self.model.args, initial, max_capacity=self._capacity(seq),
                                dtype=self.model.tok_embeddings.weight.dtype)
            if seq.request.images:  # encode the images once; prefill chunks slice the result
                ids = torch.tensor([seq.request.prompt_ids], dtype=torch.long)
                seq.embeddings = self.model.embed(ids, seq.request.images)
        prompt = seq.request.prompt_ids
        if seq.position < len(prompt):  # prefill one chunk per turn
            chunk = prompt[seq.position:seq.position + PREFILL_CHUNK]
            logits = self._forward(chunk, seq)
            if seq.position < len(prompt):
                return
        else:
            logits = self._forward([seq.next_token], seq)
        if seq.request.params.max_tokens == 0:
            return self._finish(seq, "length")
        token = seq.sampler.sample(logits)
        seq.sampler.observe(token)
        self._accept(seq, token)

    def _forward(self, tokens: list[int], seq: _Sequence) -> torch.Tensor:
        ids = torch.tensor([tokens], dtype=torch.long)
        embeddings = None
        if seq.embeddings is not None and seq.position < seq.embeddings.shape[1]:
            embeddings = seq.embeddings[:, seq.position:seq.position + len(tokens)]
        logits = self.model(ids, start_pos=seq.position, cache=seq.cache, last_only=True,
                            embeddings=embeddings)
        seq.position += len(tokens)
        return logits[0, -1]

    def _accept(self, seq: _Sequence, token: int) -> None:
        if token in self.tokenizer.stop_ids:
            return self._finish(seq, "stop")
        seq.generated.append(token)
        seq.next_token = token
        text, stopped = seq.stops.feed(seq.decoder.push(token))
        if stopped:
            return self._finish(seq, "stop", text, at_stop_string=True)
        max_tokens = seq.request.params.max_tokens
        if max_tokens is not None and len(seq.generated) >= max_tokens:
            return self._finish(seq, "length", text)
        if len(seq.request.prompt_ids) + len(seq.generated) >= self.max_context:
            return self._finish(seq, "model_length", text)
        if text:
            seq.emit(GenerationOutput(text=text, completion_tokens=len(seq.generated)))

    def _finish(self, seq: _Sequence, reason: str, text: str = "", error: str | None = None,
                at_stop_string: bool = False) -> None:
        if not at_stop_string:  # held-back text never completed a stop string: it is output
            text += seq.stops.flush()
        seq.emit(GenerationOutput(text=text, completion_tokens=len(seq.generated),
                                  finish_reason=reason, error=error))
        seq.cancelled = True
        if seq in self._active:
            self._active.remove(seq)
