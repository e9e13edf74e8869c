"""GET /v1/models and /v1/models/{id}: model cards the official SDKs can parse."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from magistral.api.auth import require_key
from magistral.api.errors import APIError
from magistral.engine.embedder import EmbeddingModel
from magistral.engine.registry import ServedModel

router = APIRouter(dependencies=[Depends(require_key)])


def model_card(model: ServedModel | EmbeddingModel) -> dict[str, Any]:
    if isinstance(model, EmbeddingModel):
        return _embedding_card(model)
    return {
        "id": model.id, "object": "model", "created": model.created, "owned_by": model.owned_by,
        "name": model.id, "description": model.description,
        "max_context_length": model.max_context_length, "aliases": model.aliases,
        "deprecation": None, "default_model_temperature": model.default_temperature,
        "type": "base",
        "capabilities": {
            "completion_chat": True, "function_calling": model.function_calling,
            "reasoning": model.reasoning, "vision": model.vision, "completion_fim": model.fim,
            "fine_tuning": False, "classification": False, "ocr": False, "moderation": False,
            "audio": False,
        },
    }


def _embedding_card(model: EmbeddingModel) -> dict[str, Any]:
    return {
        "id": model.id, "object": "model", "created": model.created, "owned_by": model.owned_by,
        "name": model.id, "description": model.description,
        "max_context_length": model.max_context_length, "aliases": model.aliases,
        "deprecation": None, "default_model_temperature": None, "type": "base",
        "capabilities": {
            "completion_chat": False, "function_calling": False, "reasoning": False, "vision": False,
            "completion_fim": False, "fine_tuning": False, "classification": False, "ocr": False,
            "moderation": False, "audio": False, "embeddings": True,
        },
    }


@router.get("/v1/models")
async def list_models(request: Request) -> dict[str, Any]:
    return {"object": "list", "data": [model_card(m) for m in request.app.state.registry.everything]}


@router.get("/v1/models/{model_id}")
async def retrieve_model(model_id: str, request: Request) -> dict[str, Any]:
    model = request.app.state.registry.lookup(model_id)
    if model is None:
        raise APIError(404, f"Model '{model_id}' not found", param="model", code="model_not_found")
    return model_card(model)
