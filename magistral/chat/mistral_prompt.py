"""Prompts for Mistral-family models through mistral-common: messages → token ids, images laid
out as [IMG]…[IMG_BREAK]…[IMG_END] (preprocessed by our own encoder), thinking chunks as
[THINK]…[/THINK]."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from mistral_common.exceptions import MistralCommonException
from mistral_common.protocol.fim.request import FIMRequest
from mistral_common.protocol.instruct.chunk import ImageChunk, TextChunk, ThinkChunk
from mistral_common.protocol.instruct.messages import (
    AssistantMessage,
    SystemMessage,
    ToolMessage,
    UserMessage,
)
from mistral_common.protocol.instruct.request import ChatCompletionRequest
from mistral_common.protocol.instruct.tool_calls import FunctionCall, Tool, ToolCall
from mistral_common.tokens.tokenizers.base import SpecialTokenPolicy
from mistral_common.tokens.tokenizers.image import ImageEncoder, ImageEncoding
from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

from magistral.chat.images import image_token_ids, preprocess, preprocess_fixed, token_grid
from magistral.chat.messages import SAFE_PROMPT
from magistral.chat.prompt import EncodedPrompt
from magistral.chat.reasoning import REASONING_SYSTEM_PROMPT
from magistral.chat.tools import MistralToolFormat
from magistral.config import VisionArgs
from magistral.engine.grammar import GrammarCompiler

# decoded as text: the reasoning splitter and the tool-call parser read them
VISIBLE_SPECIALS = ("[THINK]", "[/THINK]", "[TOOL_CALLS]", "[ARGS]", "[CALL_ID]")


class NativeImageEncoder(ImageEncoder):
    """mistral-common's image hook, served by our preprocessing (magistral.chat.images). A model
    trained on one image size (VisionArgs.fixed_image_size) gets every image stretched to it; with
    column tokens, one row of [IMG] (one per patch column) and [IMG_END]."""

    fixed_size: tuple[int, int] | None = None
    column_tokens: bool = False

    def __call__(self, content: ImageChunk) -> ImageEncoding:  # type: ignore[override]
        cfg, ids = self.image_config, self.special_ids
        if self.fixed_size is not None:
            columns, rows = self.fixed_grid()
            return ImageEncoding(tokens=image_token_ids(columns, rows, ids.img, ids.img_break, ids.img_end),
                                 image=preprocess_fixed(content.image, *self.fixed_size))
        columns, rows = token_grid(*content.image.size, cfg.image_patch_size, cfg.spatial_merge_size,
                                   cfg.max_image_size)
        return ImageEncoding(
            tokens=image_token_ids(columns, rows, ids.img, ids.img_break, ids.img_end),
            image=preprocess(content.image, cfg.image_patch_size, cfg.spatial_merge_size,
                             cfg.max_image_size))

    def fixed_grid(self) -> tuple[int, int]:
        """(columns, rows) of image tokens for a fixed-size model: every image has the same."""
        assert self.fixed_size is not None
        height, width = self.fixed_size
        if self.column_tokens:
            return width // self.image_config.image_patch_size, 1
        tile = self.image_config.image_patch_size * self.image_config.spatial_merge_size
        return width // tile, height // tile


def _chunks(content: Any, *, allow_images: bool = True) -> Any:
    if content is None or isinstance(content, str):
        return content or ""
    out = []
    for chunk in content:
        kind = chunk["type"]
        if kind == "text":
            out.append(TextChunk(text=chunk["text"]))
        elif kind == "thinking":
            out.append(ThinkChunk(thinking="".join(c["text"] for c in chunk["thinking"]),
                                  closed=chunk.get("closed", True) is not False))
        elif kind == "image" and allow_images:
            out.append(ImageChunk(image=chunk["image"]))
        else:
            raise ValueError(f"content chunk of type {kind!r} is not allowed here")
    return out


def _message(m: dict[str, Any]) -> Any:
    role = m["role"]
    if role == "system":
        return SystemMessage(content=_chunks(m["content"], allow_images=False))
    if role == "user":
        return UserMessage(content=_chunks(m.get("content")))
    if role == "assistant":
        calls = [ToolCall(id=c.get("id") or "null", function=FunctionCall(
            name=c["function"]["name"], arguments=c["function"]["arguments"]
            if isinstance(c["function"]["arguments"], str) else json.dumps(c["function"]["arguments"])))
            for c in m.get("tool_calls") or []]
        return AssistantMessage(content=_chunks(m.get("content"), allow_images=False) or None,
                                tool_calls=calls or None, prefix=bool(m.get("prefix")))
    return ToolMessage(content=_chunks(m.get("content"), allow_images=False),
                       tool_call_id=m.get("tool_call_id"), name=m.get("name"))


class TekkenTokenizer:
    """The engine's view of a mistral-common tokenizer: decode (reasoning markers kept) and
    the ids that end generation."""

    def __init__(self, mistral: MistralTokenizer):
        self._tok = mistral.instruct_tokenizer.tokenizer
        self.vocab_size = self._tok.n_words
        self.eos_id, self.bos_id = self._tok.eos_id, self._tok.bos_id
        self.eos_token = self._tok.id_to_piece(self.eos_id)
        self.bos_token = self._tok.id_to_piece(self.bos_id)
        self.stop_ids = {self._tok.eos_id}
        visible = set()
        for name in VISIBLE_SPECIALS:
            try:
                visible.add(self._tok.get_special_token(name))
            except Exception:  # older tokenizers have no reasoning markers
                pass
        self._hidden = {i for i in range(self._tok.num_special_tokens) if i not in visible}
        self.has_think = {"[THINK]", "[/THINK]"} <= {self._tok.id_to_piece(i) for i in visible}

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode([i for i in ids if i not in self._hidden],
                                special_token_policy=SpecialTokenPolicy.KEEP)


class MistralPrompter:
    def __init__(self, tokenizer_file: str | Path, vision: VisionArgs | None = None):
        """`vision`: the model's encoder, where it fixes the image size or lays images out as
        column tokens (magistral-mini); Mistral's published models need nothing from it."""
        self.mistral = MistralTokenizer.from_file(str(tokenizer_file))
        instruct = self.mistral.instruct_tokenizer
        if instruct.image_encoder is not None:
            old = instruct.image_encoder
            instruct.image_encoder = NativeImageEncoder(old.image_config, old.special_ids)
            if vision is not None and vision.fixed_image_size is not None:
                instruct.image_encoder.fixed_size = vision.fixed_image_size
                instruct.image_encoder.column_tokens = vision.column_tokens
        self.tokenizer = TekkenTokenizer(self.mistral)
        self.tool_format = MistralToolFormat(self.mistral)
        self.grammar = GrammarCompiler(lambda: self.tool_format.llg_tokenizer)
        self.reasoning = self.tokenizer.has_think
        self.vision = instruct.image_encoder is not None
        try:  # tokenizers from v7 on carry [PREFIX]/[SUFFIX]/[MIDDLE]
            self.mistral.encode_fim(FIMRequest(prompt="a", suffix="b"))
            self.fim = True
        except (MistralCommonException, NotImplementedError, AttributeError):
            self.fim = False

    def drop_images(self) -> None:
        """Serve text only: a text-only checkpoint may ship its family's shared tokenizer, whose
        tekken.json has an image section; images are then refused (400), text is served."""
        self.mistral.instruct_tokenizer.image_encoder = None
        self.vision = False

    @property
    def max_image_tokens(self) -> int:
        """An image's tokens at the largest size: a grid of merged patches, a break per row."""
        encoder = self.mistral.instruct_tokenizer.image_encoder
        if encoder is None:
            return 0
        cfg = encoder.image_config
        if encoder.fixed_size is not None:  # no image to preprocess: the grid is fixed
            columns, rows = encoder.fixed_grid()
            return (columns + 1) * rows
        side = -(-cfg.max_image_size // (cfg.image_patch_size * cfg.spatial_merge_size))
        return side * side + side

    def encode_text(self, text: str, add_special: bool = True) -> list[int]:
        return self.mistral.instruct_tokenizer.tokenizer.encode(text, bos=add_special, eos=False)

    def encode_fim(self, prompt: str, suffix: str) -> list[int]:
        return list(self.mistral.encode_fim(FIMRequest(prompt=prompt, suffix=suffix)).tokens)

    def encode(self, messages: list[dict[str, Any]], *, reasoning_prompt: bool,
               safe_prompt: bool = False, tools: list[dict[str, Any]] | None = None) -> EncodedPrompt:
        converted = [_message(m) for m in messages]
        if reasoning_prompt and self.reasoning and not any(m["role"] == "system" for m in messages):
            converted.insert(0, SystemMessage(content=_chunks(REASONING_SYSTEM_PROMPT)))
        if safe_prompt:
            first = converted[0]
            if isinstance(first, SystemMessage) and isinstance(first.content, str):
                converted[0] = SystemMessage(content=f"{SAFE_PROMPT}\n\n{first.content}")
            else:
                converted.insert(0, SystemMessage(content=SAFE_PROMPT))
        tokenized = self.mistral.encode_chat_completion(ChatCompletionRequest(
            messages=converted, tools=[Tool.model_validate(t) for t in tools] if tools else None))
        images = [torch.from_numpy(image) for image in tokenized.images]
        return EncodedPrompt(ids=list(tokenized.tokens), images=images)
