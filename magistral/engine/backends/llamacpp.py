"""llama.cpp (through llama-cpp-python) serving the same GGUF, for users who prefer it and for
side-by-side benchmarks. Optional: `pip install magistral[llamacpp]` (it compiles llama.cpp).

Prompts are built and detokenized by our own code, so both engines see the same token ids and
apply stop strings the same way; llama.cpp samples. One llama.cpp context serves one sequence
at a time (requests queue); it reuses the KV of the longest prefix shared with the previous
prompt, which is llama.cpp's own prefix cache. Logprobs are read from llama.cpp's logits: the
last row after each sampled token, and, for a prompt whose own logprobs are asked for (echo),
every row of a prompt evaluated with all its logits kept (its KV then serves the generation).
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import torch

from magistral.chat.tokenizer import IncrementalDecoder
from magistral.engine.engine import Detokenizer, GenerationOutput, GenerationRequest
from magistral.engine.sampling import TokenLogprob, token_logprobs
from magistral.engine.stops import StopMatcher


class LlamaCppEngine:
    def __init__(self, gguf_path: Path, tokenizer: Detokenizer, n_ctx: int, n_threads: int | None = None):
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise RuntimeError("the llama.cpp engine needs llama-cpp-python: "
                               "pip install 'magistral[llamacpp]'") from exc
        self.llm = Llama(model_path=str(gguf_path), n_ctx=n_ctx, n_threads=n_threads or os.cpu_count(),
                         n_batch=512, verbose=False, logits_all=False)
        self.tokenizer = tokenizer
        self.max_context = n_ctx
        self._jobs: queue.Queue = queue.Queue()
        self._busy = False
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="llamacpp-engine", daemon=True)
        self._thread.start()

    @property
    def active_count(self) -> int:
        return int(self._busy)

    @property
    def queued_count(self) -> int:
        return self._jobs.qsize()

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationOutput]:
        if request.images:
            raise ValueError("the llama.cpp engine serves text only")
        loop = asyncio.get_running_loop()
        outputs: asyncio.Queue = asyncio.Queue()
        cancelled = threading.Event()
        self._jobs.put((request, loop, outputs, cancelled))
        try:
            while True:
                output = await outputs.get()
                yield output
                if output.finish_reason is not None:
                    return
        finally:
            cancelled.set()

    def shutdown(self) -> None:
        self._stopped = True
        self._jobs.put(None)
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stopped:
            job = self._jobs.get()
            if job is None:
                return
            request, loop, outputs, cancelled = job
            if cancelled.is_set():
                continue
            self._busy = True

            def emit(output: GenerationOutput, loop=loop, outputs=outputs) -> None:
                loop.call_soon_threadsafe(outputs.put_nowait, output)
            try:
                self._serve(request, emit, cancelled)
            except Exception as exc:
                emit(GenerationOutput("", 0, finish_reason="error", error=f"{type(exc).__name__}: {exc}"))
            finally:
                self._busy = False

    def _serve(self, request: GenerationRequest, emit, cancelled: threading.Event) -> None:
        p = request.params
        if p.seed is not None:
            self.llm.set_seed(p.seed)
        decoder, stops = IncrementalDecoder(self.tokenizer), StopMatcher(p.stop)
        limit = self.max_context - len(request.prompt_ids)
        max_tokens = limit if p.max_tokens is None else min(p.max_tokens, limit)
        generated, pending = 0, []
        prompt_logprobs = None
        if request.prompt_logprobs is not None:
            prompt_logprobs = self._score_prompt(request.prompt_ids, request.prompt_logprobs)

        def output(text: str, finish_reason: str | None = None) -> GenerationOutput:
            nonlocal pending, prompt_logprobs
            out = GenerationOutput(text, generated, finish_reason=finish_reason, logprobs=pending,
                                   prompt_logprobs=prompt_logprobs)
            pending, prompt_logprobs = [], None
            return out

        if max_tokens <= 0:
            return emit(output("", "length" if p.max_tokens == 0 else "model_length"))
        steps = []
        if p.logit_bias:
            bias = np.zeros(self.llm.n_vocab(), dtype=np.float32)
            for token, value in p.logit_bias.items():
                bias[token] = value
            steps.append(lambda _ids, scores: scores + bias)
        constraint = request.constraint
        if constraint is not None:  # the grammar's mask, after the bias (a bias cannot undo it)
            steps.append(lambda _ids, scores: np.where(constraint.allowed(scores.shape[-1]).numpy(),
                                                       scores, -np.inf).astype(np.float32))
        processors = None
        if steps:
            from llama_cpp import LogitsProcessorList
            processors = LogitsProcessorList(steps)
        tokens = self.llm.generate(request.prompt_ids, temp=p.temperature, top_p=p.top_p, top_k=p.top_k,
                                   min_p=p.min_p, repeat_penalty=p.repetition_penalty,
                                   presence_penalty=p.presence_penalty, frequency_penalty=p.frequency_penalty,
                                   logits_processor=processors, reset=True)
        for token in tokens:
            if cancelled.is_set():
                return
            if constraint is not None and not constraint.accept(token):
                return emit(GenerationOutput("", generated, finish_reason="error",
                                             error=f"grammar refused token {token}"))
            if token in self.tokenizer.stop_ids:
                return emit(output(stops.flush(), "stop"))
            if p.logprobs is not None:
                pending += token_logprobs(self._last_logits()[None], [token], p.logprobs)
            generated += 1
            text, stopped = stops.feed(decoder.push(token))
            if stopped or (constraint is not None and constraint.done):
                return emit(output(text + ("" if stopped else stops.flush()), "stop"))
            if generated >= max_tokens:
                reason = "length" if p.max_tokens is not None and generated >= p.max_tokens \
                    else "model_length"
                return emit(output(text + stops.flush(), reason))
            emit(output(text))

    def _last_logits(self) -> torch.Tensor:
        """The logits that produced the token just sampled (llama.cpp's last output row)."""
        row = np.ctypeslib.as_array(self.llm._ctx.get_logits_ith(-1), shape=(self.llm.n_vocab(),))
        return torch.from_numpy(row.copy())

    def _score_prompt(self, ids: list[int], k: int) -> list[TokenLogprob | None]:
        """Evaluate the prompt from scratch with logits for every position (llama.cpp keeps only
        the last row otherwise); the KV stays, so generation continues from it."""
        llm, vocab = self.llm, self.llm.n_vocab()
        llm.reset()
        llm._ctx.kv_cache_seq_rm(-1, 0, -1)
        entries: list[TokenLogprob | None] = [None]
        for start in range(0, len(ids), llm.n_batch):
            batch = ids[start:start + llm.n_batch]
            llm._batch.set_batch(batch=batch, n_past=start, logits_all=True)
            llm._ctx.decode(llm._batch)
            logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(len(batch), vocab))
            targets = ids[start + 1:start + 1 + len(batch)]
            entries += token_logprobs(torch.from_numpy(logits[:len(targets)].copy()), targets, k)
            llm.input_ids[start:start + len(batch)] = batch
            llm.n_tokens = start + len(batch)
        llm._requires_eval = False  # the last row is live: generate() samples from it directly
        return entries
