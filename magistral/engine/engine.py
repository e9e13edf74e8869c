"""The generation engine: an async front over one worker thread that owns the model.

Continuous batching: up to `max_active` sequences share one slot KV cache. Each round the
worker prefills up to PREFILL_CHUNK prompt tokens of up to PREFILL_PROMPTS waiting prompts
(several short ones, or one chunk of a long one, so a long prompt cannot stall the others),
then runs a single batched decode step for every running sequence. New requests join between
rounds; finished or cancelled ones leave at once (their slot is refilled by the last one, so
slots stay packed). A consumer that stops listening (client hung up) cancels its sequence.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from magistral.chat.tokenizer import IncrementalDecoder
from magistral.engine.grammar import Constraint, MaskComputer
from magistral.engine.heap import release_free_heap
from magistral.engine.prefix_cache import PrefixCache
from magistral.engine.sampling import Sampler, SamplingParams, TokenLogprob, token_logprobs
from magistral.engine.stops import StopMatcher
from magistral.model.cache import DecodeView, SlotKVCache
from magistral.model.quantize import dense_prefill
from magistral.model.transformer import Transformer

PREFILL_CHUNK = 512  # prompt tokens per round: bounds activation memory, interleaves with decode
# prompts started per round. 16 streams arriving together (`magistral eval latency`, 2 runs):
# one at a time gave TTFT p50/p95 307/1650 ms and 163 tokens/s, all waiting ones 1262/1588 ms
# and 156; 4, prefilled together in one batch when new and short, 436/846 ms and 180; 8, 540/838
# ms and 188
PREFILL_PROMPTS = 4
SHARED_PREFIX_MIN = 16  # new prompts that share this many leading tokens compute them once
IDLE_BEFORE_TRIM_S = 1.0  # an engine idle this long gives freed heap memory back (engine/heap.py)


def _shared_prefix(prompts: list[list[int]]) -> int:
    """Leading tokens all prompts share, when worth computing once (0 otherwise)."""
    first, length = prompts[0], min(map(len, prompts))
    shared = next((i for i in range(length) if any(p[i] != first[i] for p in prompts[1:])), length)
    return shared if SHARED_PREFIX_MIN <= shared < max(map(len, prompts)) else 0


def _together_cost(prompts: list[list[int]]) -> int:
    """Token positions computed when these prompts are prefilled together: the shared prefix
    once, then every prompt's rest padded to the longest."""
    shared = _shared_prefix(prompts)
    return shared + len(prompts) * max(len(p) - shared for p in prompts)


def _scoring_only(seq: _Sequence) -> bool:
    """A request that only scores its prompt (evaluations' log-likelihoods): batched with other
    such ones even when the engine is batch-invariant; its logprobs agree to ~1e-6, and it decodes
    no tokens that could differ."""
    return seq.request.prompt_logprobs is not None and seq.request.params.max_tokens == 0


class Detokenizer(Protocol):
    stop_ids: set[int]

    def decode(self, ids: list[int]) -> str: ...


@dataclass
class GenerationRequest:
    prompt_ids: list[int]
    params: SamplingParams
    images: list[torch.Tensor] = field(default_factory=list)  # for the [IMG] positions, in order
    prompt_logprobs: int | None = None  # k: every prompt token's logprob (+ top k), computed in full
    constraint: Constraint | None = None  # a grammar the output must follow (tools, JSON)
    chat: dict[str, Any] | None = None  # upstream engines: the chat request they forward


@dataclass
class GenerationOutput:
    """One increment of a generation: new text and, on the last one, why it ended."""
    text: str
    completion_tokens: int
    finish_reason: str | None = None  # stop | length | model_length | error
    error: str | None = None
    cached_tokens: int = 0  # prompt tokens served from the prefix cache
    logprobs: list[TokenLogprob] = field(default_factory=list)  # of the tokens since the last output
    prompt_logprobs: list[TokenLogprob | None] | None = None  # on the first output; None for token 0
    prompt_tokens: int | None = None  # upstream engines: the upstream's own count, on the last output


@dataclass(eq=False)  # a sequence is itself: comparing fields would compare image tensors
class _Sequence:
    request: GenerationRequest
    loop: asyncio.AbstractEventLoop
    outputs: asyncio.Queue
    sampler: Sampler
    decoder: IncrementalDecoder
    stops: StopMatcher
    embeddings: torch.Tensor | None = None  # (1, prompt, dim) when the prompt has images
    position: int = 0  # tokens in this sequence's cache slot
    cached_tokens: int = 0
    generated: list[int] = field(default_factory=list)
    next_token: int | None = None
    cancelled: bool = False
    started: bool = False
    logprobs: list[TokenLogprob] = field(default_factory=list)  # not yet sent
    prompt_logprobs: list[TokenLogprob | None] | None = None

    def output(self, text: str, finish_reason: str | None = None, error: str | None = None
               ) -> GenerationOutput:
        """The next output, carrying the logprobs gathered since the last one."""
        out = GenerationOutput(text=text, completion_tokens=len(self.generated), finish_reason=finish_reason,
                               error=error, cached_tokens=self.cached_tokens, logprobs=self.logprobs,
                               prompt_logprobs=self.prompt_logprobs)
        self.logprobs, self.prompt_logprobs = [], None
        return out

    def record_prompt_logprobs(self, logits: torch.Tensor, start: int) -> None:
        """logits (T, vocab) of prompt positions [start, start+T): each predicts the next token."""
        k = self.request.prompt_logprobs
        if k is None:
            return
        if self.prompt_logprobs is None:
            self.prompt_logprobs = [None]
        targets = self.request.prompt_ids[start + 1:start + 1 + logits.shape[0]]
        self.prompt_logprobs += token_logprobs(logits[:len(targets)], targets, k)

    @property
    def cacheable(self) -> bool:
        """Whether the prefix cache serves this prompt: image features are not part of its token
        key, and a prompt scored for its own logprobs (evaluations) needs every position computed
        and is rarely asked again."""
        return not self.request.images and self.request.prompt_logprobs is None

    @property
    def prefilling(self) -> bool:
        """The last prompt token is not prefilled: the first decode step computes it (so a
        prompt gives the same numbers whether its prefix came from the cache or not)."""
        return self.position < len(self.request.prompt_ids) - 1

    def emit(self, output: GenerationOutput) -> None:
        self.loop.call_soon_threadsafe(self.outputs.put_nowait, output)


class Engine:
    def __init__(self, model: Transformer, tokenizer: Detokenizer, max_active: int = 8,
                 prefix_cache_mb: float = 256.0, batch_invariant: bool = True, compile_decode: bool = False,
                 device: torch.device | str | None = None):
        """`batch_invariant`: a prompt's numbers do not depend on what else runs or on the prefix
        cache. Matmul kernels pick their blocking by the number of rows (bf16 here: a row's
        result at 9–32 rows differs from the same row among 400), so a prompt is never prefilled
        in a batch with others, its chunks start at multiples of PREFILL_CHUNK whatever else
        runs, and a prefix-cache hit is taken only where a fresh prefill would have cut a chunk
        (or for the whole prompt, computed alike). False: prompts arriving together are
        prefilled in one batch and any cached prefix is reused (faster first tokens under load).
        `compile_decode`: decode steps run a compiled block (engine/compiled.py), compiled here.
        `device`: where the KV cache and the step's inputs live (default: the model's); logits
        come back to the CPU for sampling."""
        self.model = model
        self.batch_invariant = batch_invariant
        self.tokenizer = tokenizer
        self.max_context = model.args.max_seq_len
        self.max_active = max_active
        self.dtype = model.tok_embeddings.weight.dtype
        self.device = torch.device(device) if device is not None else model.tok_embeddings.weight.device
        with torch.inference_mode():  # the kind of tensor it becomes when the worker grows it
            # 2 slots of 256 positions at first, each doubled when sequences need more, and back
            # when idle: preallocating 16 slots of 1024 held 377 MB of KV whatever the load
            self.cache = SlotKVCache(model.args, slots=max_active, capacity=256,
                                     max_capacity=self.max_context, dtype=self.dtype, device=self.device)
        self.prefix_cache = PrefixCache(int(prefix_cache_mb * 2**20))
        self._decode: Callable[[torch.Tensor, DecodeView], torch.Tensor] = model.decode
        if compile_decode:
            from magistral.engine.compiled import CompiledDecoder  # imports Inductor: only when asked

            self._decode = CompiledDecoder(model, max_active, self.dtype)
        self._incoming: queue.Queue[_Sequence] = queue.Queue()
        self._active: list[_Sequence] = []  # index = cache slot
        self._wake = threading.Event()
        self._stopped = False
        self._masks = MaskComputer()
        self._mask_thread = ThreadPoolExecutor(1, thread_name_prefix="magistral-grammar")
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
        vision = self.model.args.vision
        if vision is not None and request.prompt_ids[-1] == vision.image_token_id:
            raise ValueError("a prompt must not end with an image token")  # it is decoded as text
        seq = _Sequence(request=request, loop=asyncio.get_running_loop(), outputs=asyncio.Queue(),
                        sampler=Sampler(request.params, self.model.args.vocab_size, request.prompt_ids),
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
        self._mask_thread.shutdown(wait=False)

    # --- worker thread -------------------------------------------------------------------

    def _run(self) -> None:
        worked, idle_since = False, None
        with torch.inference_mode():
            while not self._stopped:
                for seq in [s for s in self._active if s.cancelled]:
                    self._release(seq)
                self._admit()
                if not self._active:
                    idle_since = idle_since or time.monotonic()
                    # idle a second (the requests' own teardown done): give back what they freed,
                    # and the KV slots they grew
                    if worked and time.monotonic() - idle_since > IDLE_BEFORE_TRIM_S:
                        self.cache.shrink()
                        release_free_heap()
                        worked = False
                    self._wake.wait(timeout=0.5)
                    self._wake.clear()
                    continue
                worked, idle_since = True, None
                try:
                    self._round()
                except Exception as exc:  # a failed forward fails the sequences in it, not the server
                    for seq in list(self._active):
                        self._finish(seq, "error", error=f"{type(exc).__name__}: {exc}")

    def _admit(self) -> None:
        while len(self._active) < self.max_active:
            try:
                seq = self._incoming.get_nowait()
            except queue.Empty:
                return
            if seq.cancelled:
                continue
            self._active.append(seq)
            if seq.cacheable:
                hit = self.prefix_cache.lookup(
                    seq.request.prompt_ids, aligned=PREFILL_CHUNK if self.batch_invariant else None)
                if hit is not None:
                    length, layers = hit
                    self.cache.write(len(self._active) - 1, layers)
                    seq.position = seq.cached_tokens = length
                    if self._first_token_from_cache(seq):
                        continue
            if not seq.prefilling:
                self._prefilled(seq)

    def _first_token_from_cache(self, seq: _Sequence) -> bool:
        """A repeated whole prompt whose last position and first logits are cached: sampled now,
        without a forward pass (the same numbers: its first decode step was batch-invariant).
        Not for grammar-constrained requests, whose masks the decode step applies."""
        prompt = seq.request.prompt_ids
        if (seq.position != len(prompt) - 1 or seq.request.constraint is not None
                or seq.request.params.max_tokens == 0):
            return False
        stored = self.prefix_cache.completion(prompt)
        if stored is None:
            return False
        tail, logits = stored
        self.cache.write(len(self._active) - 1, tail, start=seq.position)
        seq.position = seq.cached_tokens = len(prompt)
        self._sample_and_accept(seq, logits.clone(), any_allowed=True)
        return True

    def _round(self) -> None:
        # requests that arrive together start in this round, not one per decode step
        budget = PREFILL_CHUNK
        waiting = [s for s in self._active if s.prefilling][:PREFILL_PROMPTS]
        fresh = [s for s in waiting if s.position == 0 and not s.request.images
                 and (not self.batch_invariant or _scoring_only(s))]
        while len(fresh) > 1 and _together_cost([s.request.prompt_ids[:-1] for s in fresh]) > budget:
            fresh.remove(max(fresh, key=lambda s: len(s.request.prompt_ids)))
        if len(fresh) > 1:  # new prompts that fit the budget together: one batched forward
            budget -= self._prefill_together(fresh)
        for seq in waiting:
            if budget <= 0:
                break
            if seq.prefilling:
                # invariant: up to the next multiple of PREFILL_CHUNK, whatever the budget left
                chunk = PREFILL_CHUNK - seq.position % PREFILL_CHUNK if self.batch_invariant else budget
                budget -= self._prefill_chunk(seq, chunk)
        if any(not s.prefilling and s.next_token is not None for s in self._active):
            self._decode_step()

    def _ids(self, ids: list) -> torch.Tensor:
        return torch.tensor(ids, dtype=torch.long, device=self.device)

    def _prefill_chunk(self, seq: _Sequence, budget: int) -> int:
        """Prefill up to `budget` more prompt tokens of `seq`; returns how many."""
        prompt = seq.request.prompt_ids
        slot = self._active.index(seq)
        if seq.request.images and seq.embeddings is None:  # encode the images once
            ids = self._ids([prompt])
            seq.embeddings = self.model.embed(ids, seq.request.images)
        chunk = prompt[seq.position:min(seq.position + budget, len(prompt) - 1)]
        embeddings = None
        if seq.embeddings is not None:
            embeddings = seq.embeddings[:, seq.position:seq.position + len(chunk)]
        scoring = seq.request.prompt_logprobs is not None
        with dense_prefill():
            logits = self.model(self._ids([chunk]), start_pos=seq.position,
                                cache=self.cache.for_slot(slot), embeddings=embeddings,
                                hidden_only=not scoring)
        if logits is not None:
            seq.record_prompt_logprobs(logits[0], seq.position)
        seq.position += len(chunk)
        if not seq.prefilling:
            if seq.cacheable:
                self.prefix_cache.store(prompt[:seq.position], self.cache, slot)
            self._prefilled(seq)
        return len(chunk)

    def _prefill_together(self, seqs: list[_Sequence]) -> int:
        """Prefill whole prompts (but their last token) of several new sequences at once. A
        prefix they all share (the question that several scored answers continue) is computed
        once, in the first one's slot, and copied to the others. Returns the tokens computed."""
        prompts = [s.request.prompt_ids[:-1] for s in seqs]
        slots = [self._active.index(s) for s in seqs]
        scoring = any(s.request.prompt_logprobs is not None for s in seqs)
        shared = _shared_prefix(prompts)
        with dense_prefill():
            if shared:
                logits = self.model(self._ids([prompts[0][:shared]]), start_pos=0,
                                    cache=self.cache.for_slot(slots[0]), hidden_only=not scoring)
                for seq in seqs:
                    if logits is not None:
                        seq.record_prompt_logprobs(logits[0], 0)
                for slot in slots[1:]:
                    self.cache.move(slots[0], slot, shared)
            rests = [p[shared:] for p in prompts]
            width = max(map(len, rests))
            tokens = self._ids([r + [0] * (width - len(r)) for r in rests])
            logits = self.model(tokens, start_pos=shared, cache=self.cache.for_new_prompts(slots, shared),
                                hidden_only=not scoring)
        for row, (seq, prompt, slot) in enumerate(zip(seqs, prompts, slots, strict=True)):
            if logits is not None:
                seq.record_prompt_logprobs(logits[row, :len(prompt) - shared], shared)
            seq.position = len(prompt)
            if seq.cacheable:
                self.prefix_cache.store(prompt, self.cache, slot)
        for seq in seqs:  # only now: finishing one (max_tokens 0) moves another's slot
            self._prefilled(seq)
        return shared + sum(map(len, rests))

    def _prefilled(self, seq: _Sequence) -> None:
        """The prompt but its last token is cached: that token is the first decode input."""
        if seq.request.params.max_tokens == 0:
            return self._finish(seq, "length")
        seq.next_token = seq.request.prompt_ids[-1]

    def _decode_step(self) -> None:
        rows = self._active
        # rows still prefilling ride along with a placeholder token at their next free position
        # (the next prefill chunk overwrites it) so that slots stay a contiguous batch
        tokens = [s.next_token if not s.prefilling and s.next_token is not None else 0 for s in rows]
        positions = [s.position for s in rows]
        decoded = [(row, s) for row, s in enumerate(rows) if not s.prefilling and s.next_token is not None]
        held = [(row, s.request.constraint) for row, s in decoded if s.request.constraint is not None]
        # grammar masks depend only on the tokens accepted so far: computed while the model runs
        masks = None
        if held:
            vocab = self.model.args.vocab_size
            masks = self._mask_thread.submit(self._masks.compute, [c for _, c in held], vocab)
        last = self._decode(self._ids(tokens), self.cache.for_decode(positions)).cpu()  # sampled here
        for row, seq in decoded:  # a prompt's last token just computed: its KV and logits cached
            if seq.cacheable and not seq.generated and seq.position == len(seq.request.prompt_ids) - 1:
                self.prefix_cache.store_last(seq.request.prompt_ids, self.cache, row, last[row])
        allowed: dict[int, bool] = {}
        if masks is not None:  # one numpy pass per row: small torch ops here wait on OpenMP
            scores = last.numpy()
            for (row, _), mask in zip(held, masks.result(), strict=True):
                np.copyto(scores[row], -np.inf, where=~mask)
                allowed[row] = bool(mask.any())
        for _, seq in decoded:  # every position first: finishing one moves another's slot
            seq.position += 1
        for row, seq in decoded:
            if not seq.cancelled:
                self._sample_and_accept(seq, last[row], allowed.get(row, True))

    def _sample_and_accept(self, seq: _Sequence, logits: torch.Tensor, any_allowed: bool) -> None:
        """Sample from one row's float logits, where a grammar's mask is already applied."""
        constraint = seq.request.constraint
        if not any_allowed:
            return self._finish(seq, "error", error=f"grammar failed: {constraint.failed}")
        token = seq.sampler.sample(logits)
        seq.sampler.observe(token)
        if constraint is not None and not constraint.accept(token):
            return self._finish(seq, "error", error=f"grammar refused token {token}: {constraint.failed}")
        if token in self.tokenizer.stop_ids:
            return self._finish(seq, "stop")
        if seq.request.params.logprobs is not None:
            seq.logprobs += token_logprobs(logits[None], [token], seq.request.params.logprobs)
        seq.generated.append(token)
        seq.next_token = token
        text, stopped = seq.stops.feed(seq.decoder.push(token))
        if stopped:
            return self._finish(seq, "stop", text, at_stop_string=True)
        if constraint is not None and constraint.done:  # the grammar admits nothing more
            return self._finish(seq, "stop", text)
        max_tokens = seq.request.params.max_tokens
        if max_tokens is not None and len(seq.generated) >= max_tokens:
            return self._finish(seq, "length", text)
        if len(seq.request.prompt_ids) + len(seq.generated) >= self.max_context:
            return self._finish(seq, "model_length", text)
        if text or not seq.started:
            seq.started = True
            seq.emit(seq.output(text))

    def _finish(self, seq: _Sequence, reason: str, text: str = "", error: str | None = None,
                at_stop_string: bool = False) -> None:
        if not at_stop_string:  # held-back text never completed a stop string: it is output
            text += seq.stops.flush()
        seq.emit(seq.output(text, reason, error))
        seq.cancelled = True
        self._release(seq)

    def _release(self, seq: _Sequence) -> None:
        """Free a sequence's slot; the last slot's sequence moves into it."""
        if seq not in self._active:
            return
        slot, last = self._active.index(seq), len(self._active) - 1
        if slot != last:
            moved = self._active[last]
            self.cache.move(last, slot, moved.position)
            self._active[slot] = moved
        self._active.pop()
        self.cache.fit(len(self._active), max((s.position for s in self._active), default=0))
