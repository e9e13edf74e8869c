"""Request models for the chat API (API.md), lenient to OpenAI-only fields."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Model(BaseModel):
    # strict: `"max_tokens": "10"`, `"temperature": true` or `"stream": "yes"` are mistakes to
    # report (422), not values to guess at (integers still pass where numbers are expected)
    model_config = ConfigDict(extra="ignore", strict=True)


def _lone_surrogate(value: Any) -> bool:
    """A JSON string escape like "\\ud800" decodes to a lone UTF-16 surrogate, which no tokenizer,
    database or JSON encoder accepts; find one anywhere in a request body."""
    if isinstance(value, str):
        return any("\ud800" <= ch <= "\udfff" for ch in value)
    if isinstance(value, dict):
        return any(_lone_surrogate(k) or _lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_lone_surrogate(v) for v in value)
    return False


class NullIsDefault(_Model):
    """A request body. JSON null for a field that has a non-null default means the default: the
    official SDKs send null for every parameter a caller passes as None. Strings must be valid
    Unicode (no lone surrogates)."""

    @model_validator(mode="before")
    @classmethod
    def _nulls_to_defaults(cls, data: Any) -> Any:
        if _lone_surrogate(data):
            raise ValueError("the request contains a lone UTF-16 surrogate (e.g. \\ud800), which is not "
                             "valid Unicode text")
        if isinstance(data, dict):
            fields = cls.model_fields
            data = {k: v for k, v in data.items()
                    if not (v is None and k in fields and fields[k].default is not None)}
        return data


class TextChunk(_Model):
    type: Literal["text"]
    text: str


class ImageURL(_Model):
    url: str
    detail: str | None = None


class ImageURLChunk(_Model):
    type: Literal["image_url"]
    image_url: str | ImageURL

    @property
    def url(self) -> str:
        return self.image_url if isinstance(self.image_url, str) else self.image_url.url


class ThinkChunk(_Model):
    type: Literal["thinking"]
    thinking: list[TextChunk]
    closed: bool | None = None


ContentChunk = Annotated[TextChunk | ImageURLChunk | ThinkChunk, Field(discriminator="type")]
SystemChunk = Annotated[TextChunk | ThinkChunk, Field(discriminator="type")]


class FunctionCall(_Model):
    name: str
    arguments: str | dict[str, Any]


class ToolCall(_Model):
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall
    index: int | None = None


class SystemMessage(_Model):
    role: Literal["system", "developer"]  # OpenAI's newer name for the system message
    content: str | list[SystemChunk]

    @field_validator("role")
    @classmethod
    def _developer_is_system(cls, role: str) -> str:
        return "system"


class UserMessage(_Model):
    role: Literal["user"]
    content: str | list[ContentChunk] | None


class AssistantMessage(_Model):
    role: Literal["assistant"]
    content: str | list[ContentChunk] | None = None
    tool_calls: list[ToolCall] | None = None
    prefix: bool = False


class ToolMessage(_Model):
    role: Literal["tool"]
    content: str | list[ContentChunk] | None
    tool_call_id: str | None = None
    name: str | None = None


Message = Annotated[SystemMessage | UserMessage | AssistantMessage | ToolMessage,
                    Field(discriminator="role")]


class JsonSchema(_Model):
    name: str = "answer"
    schema_definition: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None
    description: str | None = None


class ResponseFormat(_Model):
    type: Literal["text", "json_object", "json_schema"] = "text"
    json_schema: JsonSchema | None = None


class FunctionDef(_Model):
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(_Model):
    type: Literal["function"] = "function"
    function: FunctionDef


class FunctionName(_Model):
    name: str


class NamedToolChoice(_Model):
    type: Literal["function"] = "function"
    function: FunctionName


class SamplingOptions(NullIsDefault):
    """Sampling controls beyond Mistral's, as vLLM and OpenAI clients send them; applied by the
    engine, never silently ignored."""
    top_k: int = Field(0, ge=0)  # 0: off
    min_p: float = Field(0.0, ge=0.0, le=1.0)
    repetition_penalty: float = Field(1.0, gt=0.0, le=10.0)
    logit_bias: dict[int, Annotated[float, Field(ge=-100, le=100)]] | None = Field(None, max_length=1024)

    @field_validator("logit_bias", mode="before")
    @classmethod
    def _token_keys(cls, value: Any) -> Any:
        """JSON object keys are strings: "50256" names token 50256."""
        if isinstance(value, dict):
            try:
                return {int(k) if isinstance(k, str) and k.lstrip("-").isdigit() else k: v
                        for k, v in value.items()}
            except ValueError:
                return value
        return value

    def sampling_options(self) -> dict[str, Any]:
        return {"top_k": self.top_k, "min_p": self.min_p, "repetition_penalty": self.repetition_penalty,
                "logit_bias": dict(self.logit_bias or {})}


class ChatCompletionRequest(SamplingOptions):
    model: str
    messages: list[Message] = Field(min_length=1)
    temperature: float | None = Field(None, ge=0.0, le=1.5)
    top_p: float = Field(1.0, ge=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=0)
    stream: bool = False
    stop: str | list[str] | None = None
    random_seed: int | None = Field(None, ge=0, lt=2**63)  # torch seeds are 64-bit
    response_format: ResponseFormat | None = None
    tools: list[Tool] | None = Field(None, max_length=128)
    tool_choice: Literal["auto", "none", "any", "required"] | NamedToolChoice = "auto"
    parallel_tool_calls: bool = True
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    n: int = Field(1, ge=1, le=16)
    prompt_mode: Literal["reasoning"] | None = None
    safe_prompt: bool = False
    logprobs: bool = False  # OpenAI: the sampled tokens' logprobs ...
    top_logprobs: int | None = Field(None, ge=0, le=20)  # ... and this many alternatives each
    reasoning_effort: str | None = None  # refused: reasoning models think; prompt_mode steers them
    # how a reasoning trace is returned: Mistral's thinking chunks, or OpenAI-world
    # `reasoning_content` (as vLLM and Ollama send it); None: the server's --reasoning-output
    reasoning_format: Literal["mistral", "openai"] | None = None

    @model_validator(mode="before")
    @classmethod
    def _openai_aliases(cls, data: Any) -> Any:
        """OpenAI clients say `seed` and `max_completion_tokens`; map them to Mistral's names."""
        if isinstance(data, dict):
            data = dict(data)
            if "random_seed" not in data and data.get("seed") is not None:
                data["random_seed"] = data["seed"]
            if data.get("max_tokens") is None and data.get("max_completion_tokens") is not None:
                data["max_tokens"] = data["max_completion_tokens"]
        return data

    @property
    def wants_reasoning_prompt(self) -> bool:
        """Absent or "reasoning": add the reasoning system prompt; explicit null: add nothing."""
        return "prompt_mode" not in self.model_fields_set or self.prompt_mode == "reasoning"
