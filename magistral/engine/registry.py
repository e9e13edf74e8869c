"""The models a server offers: weights + prompt builder + engine, found by id or alias."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from magistral.chat.prompt import EncodedPrompt, Prompter, TemplatePrompter
from magistral.chat.template import ChatTemplate
from magistral.chat.tokenizer import GGUFTokenizer
from magistral.engine.embedder import EmbeddingModel, load_embedding_model
from magistral.engine.engine import Engine
from magistral.engine.heap import release_free_heap
from magistral.model.load import load_gguf
from magistral.model.quantize import quantize_model, set_batch_invariant

log = logging.getLogger("magistral.registry")

DEFAULT_MODEL_ID = "smollm2-135m-instruct"
DEFAULT_ALIASES = ["magistral-medium-latest"]


@dataclass
class ServedModel:
    id: str
    engine: Any  # Engine, or a backend with the same interface (engine/backends/)
    prompter: Prompter
    max_context_length: int
    aliases: list[str] = field(default_factory=list)
    description: str = ""
    created: int = field(default_factory=lambda: int(time.time()))
    default_temperature: float = 0.7
    owned_by: str = "magistral"
    max_image_side: int = 0  # vision models: images are downscaled to this

    @property
    def reasoning(self) -> bool:  # writes [THINK] traces; gets the reasoning system prompt
        return self.prompter.reasoning

    @property
    def vision(self) -> bool:
        return self.prompter.vision

    @property
    def max_image_tokens(self) -> int:  # the most prompt tokens one image can become
        return getattr(self.prompter, "max_image_tokens", 0)

    @property
    def function_calling(self) -> bool:  # tools, with calls constrained to their schemas
        return self.prompter.tool_format.supported

    @property
    def fim(self) -> bool:  # fill-in-the-middle prompts (/v1/fim/completions)
        return self.prompter.fim

    @property
    def tokenizer(self) -> Any:  # decode(ids) → text, for logprobs' token strings
        return self.prompter.tokenizer

    def encode_chat(self, messages: list[dict[str, Any]], *, reasoning_prompt: bool,
                    safe_prompt: bool = False, tools: list[dict[str, Any]] | None = None) -> EncodedPrompt:
        return self.prompter.encode(messages, reasoning_prompt=reasoning_prompt, safe_prompt=safe_prompt,
                                    tools=tools)


class ModelRegistry:
    """Generating models (chat, completions, FIM) and embedding models, by id or alias."""

    def __init__(self, models: list[ServedModel], embedders: list[EmbeddingModel] | None = None):
        self.models = models
        self.embedders = embedders or []
        self._by_name: dict[str, ServedModel | EmbeddingModel] = {}
        for model in [*models, *self.embedders]:
            for name in [model.id, *model.aliases]:
                if name in self._by_name:
                    raise ValueError(f"two models answer to the name {name!r}")
                self._by_name[name] = model

    def get(self, name: str) -> ServedModel | None:
        """A generating model; None for unknown names and for embedding models."""
        model = self._by_name.get(name)
        return model if isinstance(model, ServedModel) else None

    def get_embedder(self, name: str) -> EmbeddingModel | None:
        model = self._by_name.get(name)
        return model if isinstance(model, EmbeddingModel) else None

    def lookup(self, name: str) -> ServedModel | EmbeddingModel | None:
        return self._by_name.get(name)

    @property
    def everything(self) -> list[ServedModel | EmbeddingModel]:
        return [*self.models, *self.embedders]

    def shutdown(self) -> None:
        for model in self.everything:
            model.engine.shutdown()


def _native_engine(model: torch.nn.Module, tokenizer: Any, max_active: int, fast_batched_decode: bool,
                   compile_decode: bool) -> Engine:
    # the kernel choice is set before compiling: a compiled block keeps the one it was traced with
    set_batch_invariant(model, not fast_batched_decode)
    # MoE routing (model/moe.py) sizes its expert batches from data, which one graph cannot hold
    return Engine(model, tokenizer, max_active=max_active, batch_invariant=not fast_batched_decode,
                  compile_decode=compile_decode and model.args.moe is None)


def _load_gguf_model(path: Path | None, max_active: int, quantize: str, engine: str,
                     chat_template: str | None = None, fast_batched_decode: bool = False,
                     compile_decode: bool = False) -> ServedModel:
    loaded = load_gguf(path)
    meta = loaded.metadata
    tokenizer = GGUFTokenizer(meta)
    if engine == "llamacpp":
        from magistral.engine.backends.llamacpp import LlamaCppEngine
        runner: Any = LlamaCppEngine(loaded.path, tokenizer, n_ctx=loaded.model.args.max_seq_len)
        del loaded.model  # llama.cpp holds its own copy of the weights
    else:
        quantize_model(loaded.model, "int4" if quantize == "auto" else quantize)
        runner = _native_engine(loaded.model, tokenizer, max_active, fast_batched_decode, compile_decode)
    template = ChatTemplate(chat_template or meta.get("tokenizer.chat_template"), tokenizer.bos_token,
                            tokenizer.eos_token)
    reasoning = "[THINK]" in set(meta["tokenizer.ggml.tokens"])
    is_default = path is None
    model_id = DEFAULT_MODEL_ID if is_default else loaded.path.stem.lower()
    return ServedModel(
        id=model_id, engine=runner, prompter=TemplatePrompter(template, tokenizer, reasoning),
        max_context_length=int(meta[f"{meta['general.architecture']}.context_length"]),
        aliases=list(DEFAULT_ALIASES) if is_default else [],
        description=f"{meta.get('general.name', model_id)} ({loaded.path.name})")


def _load_mistral_model(folder: Path, max_active: int, quantize: str, fast_batched_decode: bool = False,
                        compile_decode: bool = False) -> ServedModel:
    from magistral.chat.mistral_prompt import MistralPrompter
    from magistral.model.checkpoints import load_checkpoint

    tekken = folder / "tekken.json"
    if not tekken.is_file():
        raise FileNotFoundError(f"{folder} has no tekken.json: Mistral-family checkpoints are served "
                                "with their mistral-common tokenizer")
    # quantised block by block while loading: a 24B checkpoint never exists whole in fp32
    model, _ = load_checkpoint(folder, quantize="none" if quantize == "auto" else quantize)
    prompter = MistralPrompter(tekken, model.args.vision)
    if prompter.vision and model.args.vision is None:  # a family's shared tokenizer: serve text
        log.info("%s: the tokenizer has an image section but the model no vision encoder; "
                 "serving text only", folder)
        prompter.drop_images()
    vision = model.args.vision
    return ServedModel(
        id=folder.name.lower(),
        engine=_native_engine(model, prompter.tokenizer, max_active, fast_batched_decode, compile_decode),
        prompter=prompter, max_context_length=model.args.max_seq_len,
        description=f"{folder.name} ({'MoE ' if model.args.moe else ''}"
                    f"{'vision ' if vision else ''}decoder, {sum(p.numel() for p in model.parameters())} "
                    "parameters)",
        max_image_side=vision.image_size if vision else 0)


def _on_short_thread(work: Any) -> Any:
    """Run `work()` in a short-lived thread. Torch ops on a long-lived thread (the server's main
    one) leave an OpenMP team behind that slows every op on the engine thread by half (measured:
    49 ms vs 25 ms per decode step); a finished helper thread leaves nothing running."""
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["value"] = work()
        except BaseException as exc:  # re-raised on the caller's thread
            result["error"] = exc

    thread = threading.Thread(target=run, name="magistral-load")
    thread.start()
    thread.join()
    # a loader's freed temporaries (fp32 tensors quantised away: ~350 MB for SmolLM2) would
    # otherwise stay in the heap until the engine's first idle moment
    release_free_heap()
    if "error" in result:
        raise result["error"]
    return result["value"]


def default_models() -> list[str | None]:
    """What `serve` serves without --model: SmolLM2 (None) and, once shipped, magistral-mini."""
    from magistral.train.ship import SHIPPED

    return [None, str(SHIPPED)] if (SHIPPED / "params.json").is_file() else [None]


def load_model(spec: str | None = None, *, max_active: int = 16, quantize: str = "auto",
               engine: str = "native", chat_template: str | None = None,
               fast_batched_decode: bool = False, compile_decode: bool = False) -> ServedModel:
    """`fast_batched_decode`: decode steps of many rows take bf16 copies of quantized weights and
    prompts arriving together are prefilled in one batch — faster, but a request's greedy tokens
    then depend on what else runs (model/quantize.py, engine/engine.py). `compile_decode`: decode
    steps run a compiled block (engine/compiled.py; dense models on our engine)."""
    options = {"fast_batched_decode": fast_batched_decode, "compile_decode": compile_decode}
    return _on_short_thread(lambda: _load(spec, max_active=max_active, quantize=quantize, engine=engine,
                                          chat_template=chat_template, **options))


def load_embedder(source: str | None = None) -> EmbeddingModel:
    """None: the packaged all-MiniLM-L6-v2 (served as all-minilm-l6-v2, alias mistral-embed);
    else a sentence-transformers BERT folder or zip."""
    return _on_short_thread(lambda: load_embedding_model(source))


def _load(spec: str | None, *, max_active: int, quantize: str, engine: str,
          chat_template: str | None = None, **options: bool) -> ServedModel:
    """`spec`: None or the default id for the embedded SmolLM2; a .gguf file; or a folder with a
    Hugging Face (config.json) or Mistral (params.json) checkpoint and its tekken.json.
    `quantize`: none | bf16 | int4 | auto (int4 for GGUF files, whose weights are 4-bit already;
    none, i.e. fp32, for safetensors checkpoints). `engine`: native, or llamacpp (GGUF files only).
    `chat_template`: Jinja source replacing a GGUF file's own (Mistral checkpoints use mistral-common)."""
    torch.set_grad_enabled(False)
    if spec in (None, "", DEFAULT_MODEL_ID, "default"):
        return _load_gguf_model(None, max_active, quantize, engine, chat_template, **options)
    path = Path(spec)
    if path.is_dir():
        if engine != "native":
            raise ValueError(f"--engine {engine} serves GGUF files only; {spec} is a checkpoint folder")
        return _load_mistral_model(path, max_active, quantize, **options)
    if path.suffix == ".gguf" and path.is_file():
        return _load_gguf_model(path, max_active, quantize, engine, chat_template, **options)
    raise FileNotFoundError(f"--model {spec}: not a .gguf file or a checkpoint folder")
