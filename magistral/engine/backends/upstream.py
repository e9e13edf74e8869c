"""Upstream engines: the platform in front of OpenAI-compatible servers (vLLM, SGLang, TGI,
llama.cpp's server, another `magistral serve`), behind the native engine's interface.

`magistral serve --upstream NAME=URL` (repeatable; several URLs under one NAME form a pool)
serves model NAME by forwarding chat requests. Our platform still does everything around the
generation: keys, limits, metering (each chunk billed before it is sent), the Mistral API shape.

- Requests go out in OpenAI's shape (messages as the client sent them, images re-encoded as
  data URLs, tools, tool_choice, response_format, sampling fields), streamed, with
  `stream_options.include_usage` so the upstream's own token counts settle the bill.
- Answers come back as text for the route's usual readers: reasoning (vLLM's
  `reasoning_content`, SGLang's `reasoning`, or Mistral thinking chunks) inside [THINK]…[/THINK],
  tool calls as the documented `<tool_call>[…]</tool_call>` text, parsed back into tool_calls.
- The pool: least outstanding requests first; a failed upstream is taken out and retried with
  exponential backoff (and by a health check every few seconds); a request that fails before
  its first token is retried once on another upstream; each upstream has a concurrency cap.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from PIL import Image
from prometheus_client import CollectorRegistry, Counter, Gauge

from magistral.chat.prompt import EncodedPrompt
from magistral.chat.tools import TaggedToolFormat
from magistral.engine.engine import GenerationOutput, GenerationRequest

log = logging.getLogger("magistral.upstream")
HEALTH_INTERVAL_S = 5.0
MAX_BACKOFF_S = 30.0
THINK_OPEN, THINK_CLOSE = "[THINK]", "[/THINK]"
IMAGE_TOKENS = 1600  # an image's prompt tokens before the upstream counts them: a large grid


class UpstreamError(RuntimeError):
    """An upstream failed or answered with an error; `before_first_token` says whether the
    client has seen anything of this answer yet (then another upstream may take it)."""

    def __init__(self, message: str, before_first_token: bool):
        super().__init__(message)
        self.before_first_token = before_first_token


@dataclass
class Upstream:
    url: str  # the server's root (…/v1 is appended)
    key: str | None = None
    max_concurrency: int = 64
    model: str | None = None  # the upstream's name for the model, from its /v1/models
    outstanding: int = 0
    failures: int = 0
    retry_at: float = 0.0  # taken out until then (monotonic seconds)
    _slots: asyncio.Semaphore | None = field(default=None, repr=False)

    @property
    def available(self) -> bool:
        return self.failures == 0 or time.monotonic() >= self.retry_at

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"} if self.key else {}

    def slots(self) -> asyncio.Semaphore:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_concurrency)
        return self._slots


class UpstreamMetrics:
    def __init__(self, registry: CollectorRegistry | None):
        registry = registry or CollectorRegistry()
        self.requests = Counter("magistral_upstream_requests", "Requests sent upstream, by outcome",
                                ["model", "upstream", "outcome"], registry=registry)
        self.outstanding = Gauge("magistral_upstream_outstanding", "Requests in flight upstream",
                                 ["model", "upstream"], registry=registry)
        self.healthy = Gauge("magistral_upstream_healthy", "1 while the upstream is in the pool",
                             ["model", "upstream"], registry=registry)


class UpstreamPool:
    def __init__(self, name: str, upstreams: list[Upstream], metrics: UpstreamMetrics,
                 timeout: float = 120.0):
        self.name, self.upstreams, self.metrics = name, upstreams, metrics
        self.timeout = httpx.Timeout(timeout, connect=5.0)
        self._health_task: asyncio.Task | None = None
        for upstream in upstreams:
            metrics.healthy.labels(name, upstream.url).set(1)

    def pick(self, exclude: set[str]) -> Upstream | None:
        """The available upstream with the fewest requests in flight (None: all down)."""
        candidates = [u for u in self.upstreams if u.url not in exclude and u.available]
        return min(candidates, key=lambda u: u.outstanding / u.max_concurrency, default=None)

    def failed(self, upstream: Upstream, reason: str) -> None:
        upstream.failures += 1
        backoff = min(MAX_BACKOFF_S, 0.5 * 2 ** (upstream.failures - 1))
        upstream.retry_at = time.monotonic() + backoff
        self.metrics.healthy.labels(self.name, upstream.url).set(0)
        log.warning("upstream %s of %s failed (%s): out of the pool for %.1f s", upstream.url, self.name,
                    reason, backoff)

    def succeeded(self, upstream: Upstream) -> None:
        if upstream.failures:
            log.info("upstream %s of %s is back", upstream.url, self.name)
        upstream.failures = 0
        self.metrics.healthy.labels(self.name, upstream.url).set(1)

    def ensure_health_checks(self) -> None:
        if self._health_task is None or self._health_task.done():
            self._health_task = asyncio.ensure_future(self._check_health())

    async def _check_health(self) -> None:
        """Upstreams that are out of the pool come back once their /v1/models answers."""
        async with httpx.AsyncClient(timeout=httpx.Timeout(2.0)) as client:
            while True:
                await asyncio.sleep(HEALTH_INTERVAL_S)
                for upstream in [u for u in self.upstreams if u.failures]:
                    try:
                        response = await client.get(f"{upstream.url}/v1/models", headers=upstream.headers)
                        if response.status_code == 200:
                            upstream.model = upstream.model or _first_model(response.json())
                            self.succeeded(upstream)
                    except (httpx.HTTPError, ValueError):
                        pass


def _first_model(listing: dict[str, Any]) -> str | None:
    data = listing.get("data") or []
    return data[0].get("id") if data else None


def discover(upstream: Upstream, name: str) -> None:
    """At startup: the upstream's name for the model (NAME if it serves one so called, else its
    first). An upstream that does not answer yet starts out of the pool."""
    try:
        response = httpx.get(f"{upstream.url}/v1/models", headers=upstream.headers, timeout=10)
        response.raise_for_status()
        ids = [m.get("id") for m in response.json().get("data", [])]
        upstream.model = name if name in ids else (ids[0] if ids else None)
    except (httpx.HTTPError, ValueError) as exc:
        log.warning("upstream %s does not answer yet (%s); it joins the pool when it does", upstream.url, exc)
        upstream.failures, upstream.retry_at = 1, time.monotonic() + 1.0


def _data_url(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def openai_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """API messages (images already loaded and checked) → OpenAI's message shape."""
    out = []
    for message in messages:
        message = dict(message)
        message.pop("prefix", None)
        content = message.get("content")
        if isinstance(content, list):
            parts = []
            for chunk in content:
                if chunk["type"] == "image":
                    parts.append({"type": "image_url", "image_url": {"url": _data_url(chunk["image"])}})
                elif chunk["type"] == "thinking":  # earlier reasoning is not sent back, as vLLM expects
                    continue
                else:
                    parts.append(chunk)
            message["content"] = parts
        out.append(message)
    return out


def prompt_estimate(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> int:
    """Prompt tokens before the upstream has counted them (admission, the first usage row): a
    byte-level BPE token covers a few bytes of text; each image is counted as a large grid. The
    upstream's own count replaces it when the answer ends."""
    text = json.dumps([m.get("content") for m in messages if isinstance(m.get("content"), str)])
    chunks = [c for m in messages if isinstance(m.get("content"), list) for c in m["content"]]
    rest = json.dumps([c for c in chunks if c["type"] != "image"] + (tools or []))
    images = sum(c["type"] == "image" for c in chunks)
    return (len(text.encode()) + len(rest.encode())) // 3 + 8 * len(messages) + IMAGE_TOKENS * images + 16


class UpstreamToolFormat(TaggedToolFormat):
    """Tools are forwarded as they are; the upstream constrains its own calls, which come back
    (see UpstreamEngine) in the documented tagged text and are parsed from it."""

    def grammar(self, *args: Any, **kwargs: Any) -> None:
        return None


class UpstreamTokenizer:
    """The upstream's vocabulary is its own: token-level features (logit_bias, logprobs) are
    refused for upstream models (api/serving.py), so nothing is decoded here."""

    stop_ids: set[int] = set()
    vocab_size = 0

    def decode(self, ids: list[int]) -> str:
        raise ValueError("upstream models return text, not token ids")


class UpstreamPrompter:
    """Messages are forwarded, not tokenized: the prompt carries them, and its `ids` stand for
    an estimate of its length (admission and context checks)."""

    reasoning = True  # upstream reasoning arrives as [THINK]…[/THINK] text (see UpstreamEngine)
    vision = True  # images are forwarded; an upstream that cannot see says so
    fim = False
    upstream = True
    max_image_tokens = IMAGE_TOKENS

    def __init__(self) -> None:
        self.tool_format = UpstreamToolFormat()
        self.tokenizer = UpstreamTokenizer()
        self.grammar = None

    def encode(self, messages: list[dict[str, Any]], *, reasoning_prompt: bool, safe_prompt: bool = False,
               tools: list[dict[str, Any]] | None = None) -> EncodedPrompt:
        estimate = prompt_estimate(messages, tools)
        chat: dict[str, Any] = {"messages": openai_messages(messages)}
        if tools:
            chat["tools"] = tools
        if safe_prompt:
            chat["safe_prompt"] = True  # Mistral's field; OpenAI-compatible servers ignore it
        return EncodedPrompt(ids=[0] * estimate, chat=chat)

    def encode_text(self, text: str, add_special: bool = True) -> list[int]:
        raise ValueError("upstream models serve chat completions only")

    def encode_fim(self, prompt: str, suffix: str) -> list[int]:
        raise ValueError("upstream models serve chat completions only")


def sampling_fields(request: GenerationRequest) -> dict[str, Any]:
    p = request.params
    fields: dict[str, Any] = {"temperature": p.temperature, "top_p": p.top_p}
    if p.max_tokens is not None:
        fields["max_tokens"] = p.max_tokens
    if p.seed is not None:
        fields["seed"] = p.seed
    if p.stop:
        fields["stop"] = p.stop
    if p.presence_penalty:
        fields["presence_penalty"] = p.presence_penalty
    if p.frequency_penalty:
        fields["frequency_penalty"] = p.frequency_penalty
    for name, default in (("top_k", 0), ("min_p", 0.0), ("repetition_penalty", 1.0)):
        if getattr(p, name) != default:  # vLLM's and SGLang's extensions, sent only when asked for
            fields[name] = getattr(p, name)
    return fields


class _Reader:
    """Upstream SSE chunks → our text: reasoning in [THINK]…[/THINK], calls as tagged text."""

    def __init__(self) -> None:
        self.thinking = False
        self.calls: dict[int, dict[str, str]] = {}
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None
        self.pieces = 0  # content chunks received: tokens, as far as we can count them

    def feed(self, event: dict[str, Any]) -> str:
        if event.get("usage"):
            self.usage = event["usage"]
        if "error" in event and not event.get("choices"):
            raise UpstreamError(f"upstream error: {str(event['error'])[:200]}", before_first_token=False)
        text = ""
        for choice in event.get("choices") or []:
            delta = choice.get("delta") or {}
            reasoning = delta.get("reasoning_content") or delta.get("reasoning") or ""
            content = delta.get("content")
            if isinstance(content, list):  # Mistral-style chunks (another magistral, Mistral's API)
                for chunk in content:
                    if chunk.get("type") == "thinking":
                        reasoning += "".join(c.get("text", "") for c in chunk.get("thinking", []))
                    elif chunk.get("type") == "text":
                        text += self._content(chunk.get("text", ""))
                content = None
            if reasoning:
                if not self.thinking:
                    text += THINK_OPEN
                    self.thinking = True
                text += reasoning
            if content:
                text += self._content(content)
            for call in delta.get("tool_calls") or []:
                index = call.get("index", len(self.calls))
                entry = self.calls.setdefault(index, {"name": "", "arguments": ""})
                function = call.get("function") or {}
                entry["name"] += function.get("name") or ""
                entry["arguments"] += function.get("arguments") or ""
            if reasoning or content or delta.get("tool_calls"):
                self.pieces += 1
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return text

    def _content(self, content: str) -> str:
        if self.thinking:
            self.thinking = False
            return THINK_CLOSE + content
        return content

    def end(self) -> str:
        """Text that closes the answer: an open trace, and the calls in the tagged format."""
        text = THINK_CLOSE if self.thinking else ""
        self.thinking = False
        if self.calls:
            calls = [{"function": c} for _, c in sorted(self.calls.items())]
            text += TaggedToolFormat().render_calls(calls)
        return text


class UpstreamEngine:
    """The engine interface over a pool: `generate` yields GenerationOutput as chunks arrive."""

    def __init__(self, pool: UpstreamPool):
        self.pool = pool
        self._client: httpx.AsyncClient | None = None
        self._active = 0

    @property
    def active_count(self) -> int:
        return self._active

    @property
    def queued_count(self) -> int:
        return 0

    def shutdown(self) -> None:
        pass

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationOutput]:
        self.pool.ensure_health_checks()
        if self._client is None:
            limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
            self._client = httpx.AsyncClient(timeout=self.pool.timeout, limits=limits)
        tried: set[str] = set()
        self._active += 1
        sent = 0  # tokens the caller has had: an error keeps them billed
        try:
            while True:
                upstream = self.pool.pick(tried)
                if upstream is None:
                    yield GenerationOutput("", 0, finish_reason="error",
                                           error=f"no upstream of {self.pool.name} is available")
                    return
                tried.add(upstream.url)
                try:
                    async for output in self._forward(upstream, request):
                        sent = output.completion_tokens
                        yield output
                    return
                except UpstreamError as exc:
                    if exc.before_first_token and len(tried) < 2:
                        continue  # once more, on another upstream
                    yield GenerationOutput("", sent, finish_reason="error", error=str(exc))
                    return
        finally:
            self._active -= 1

    async def _forward(self, upstream: Upstream, request: GenerationRequest
                       ) -> AsyncIterator[GenerationOutput]:
        assert self._client is not None and request.chat is not None
        body = {**request.chat, **sampling_fields(request), "model": upstream.model or self.pool.name,
                "stream": True, "stream_options": {"include_usage": True}}
        labels = (self.pool.name, upstream.url)
        reader, sent, completed = _Reader(), False, False
        async with upstream.slots():
            upstream.outstanding += 1
            self.pool.metrics.outstanding.labels(*labels).inc()
            try:
                async with self._client.stream("POST", f"{upstream.url}/v1/chat/completions", json=body,
                                               headers=upstream.headers) as response:
                    if response.status_code != 200:
                        detail = (await response.aread())[:300].decode(errors="replace")
                        if response.status_code >= 500 or response.status_code == 429:
                            self.pool.failed(upstream, f"HTTP {response.status_code}")
                            raise UpstreamError(f"upstream answered {response.status_code}: {detail}", True)
                        # the upstream refused the request itself (4xx): no other would take it
                        raise UpstreamError(f"upstream refused the request ({response.status_code}): "
                                            f"{detail}", before_first_token=False)
                    async for line in response.aiter_lines():
                        if not line.startswith("data:"):
                            continue
                        data = line[5:].strip()
                        if data == "[DONE]":
                            break
                        text = reader.feed(json.loads(data))
                        if text:
                            sent = True
                            yield GenerationOutput(text, reader.pieces)
                completed = reader.finish_reason is not None
            except UpstreamError:
                self.pool.metrics.requests.labels(*labels, "error").inc()
                raise
            except (httpx.HTTPError, ValueError) as exc:
                self.pool.metrics.requests.labels(*labels, "error").inc()
                self.pool.failed(upstream, type(exc).__name__)
                raise UpstreamError(f"upstream {upstream.url} failed: {type(exc).__name__}: {exc}",
                                    before_first_token=not sent) from exc
            finally:
                upstream.outstanding -= 1
                self.pool.metrics.outstanding.labels(*labels).dec()
        if not completed:  # the stream ended without saying how: a cut connection
            self.pool.metrics.requests.labels(*labels, "error").inc()
            self.pool.failed(upstream, "stream ended early")
            raise UpstreamError(f"upstream {upstream.url} ended the stream early",
                                before_first_token=not sent)
        self.pool.succeeded(upstream)
        self.pool.metrics.requests.labels(*labels, "ok").inc()
        usage = reader.usage or {}
        # our engines end with stop or length; the route itself says tool_calls when it reads calls
        finish = "length" if reader.finish_reason == "length" else "stop"
        yield GenerationOutput(reader.end(), int(usage.get("completion_tokens") or reader.pieces),
                               finish_reason=finish, prompt_tokens=usage.get("prompt_tokens"))


def parse_upstreams(specs: list[str], keys: list[str] | None) -> dict[str, list[Upstream]]:
    """`NAME=URL` (repeatable: one NAME, several URLs = a pool) and `KEY` (every upstream) or
    `NAME=KEY` (that model's), where KEY may be `@FILE` → upstreams by model name."""
    pools: dict[str, list[Upstream]] = {}
    for spec in specs:
        name, sep, url = spec.partition("=")
        if not sep or not name or not url.startswith(("http://", "https://")):
            raise ValueError(f"--upstream {spec!r}: expected NAME=http(s)://host:port")
        pools.setdefault(name, []).append(Upstream(url.rstrip("/").removesuffix("/v1")))
    for key in keys or []:
        name, sep, value = key.partition("=")
        targets = pools.get(name) if sep and name in pools else None
        value = _secret(value if targets else key)
        for upstream in (targets or [u for us in pools.values() for u in us]):
            upstream.key = value
    return pools


def _secret(value: str) -> str:
    """A key, or `@FILE` holding it: on the command line every local user reads it."""
    if not value.startswith("@"):
        return value
    try:
        return Path(value[1:]).read_text().strip()
    except OSError as exc:
        raise ValueError(f"--upstream-key {value}: cannot read the file ({exc.strerror})") from exc


def upstream_model(name: str, upstreams: list[Upstream], registry: CollectorRegistry | None,
                   max_context: int = 131072, timeout: float = 120.0) -> Any:
    from magistral.engine.registry import ServedModel

    for upstream in upstreams:
        discover(upstream, name)
    pool = UpstreamPool(name, upstreams, UpstreamMetrics(registry), timeout=timeout)
    return ServedModel(id=name, engine=UpstreamEngine(pool), prompter=UpstreamPrompter(),  # type: ignore[arg-type]
                       max_context_length=max_context, owned_by="upstream",
                       description=f"forwarded to {', '.join(u.url for u in upstreams)}")


