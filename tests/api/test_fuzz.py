"""Requests generated from the server's own OpenAPI schema (schemathesis), valid and invalid:
no answer is a 5xx, every error has the error shape, and the server is healthy afterwards."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import hypothesis
import pytest
import schemathesis

from tests.conftest import Server, new_account, new_key, start_server, stop_server

EXAMPLES_PER_OPERATION = 40


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("fuzz"))
    yield srv
    stop_server(srv)


def test_generated_requests_never_get_a_server_error(fuzz_server: Server) -> None:
    # a generous request rate, but few tokens a minute: valid requests that would generate for
    # long are refused (429) before any work, so the run stays short and bounded
    key = new_key(fuzz_server.database_url, new_account(fuzz_server.database_url), "--rpm", "100000",
                  "--tpm", "96")
    schema = schemathesis.openapi.from_url(f"{fuzz_server.base_url}/openapi.json")
    statuses: Counter[int] = Counter()
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @hypothesis.settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
                             derandomize=True, suppress_health_check=list(hypothesis.HealthCheck))
        @hypothesis.given(case=operation.as_strategy(), real_model=hypothesis.strategies.booleans())
        def probe(case: schemathesis.Case, real_model: bool) -> None:
            if real_model and isinstance(case.body, dict) and "model" in case.body:  # reach past the 404
                embeds = "embeddings" in case.operation.path
                case.body["model"] = "mistral-embed" if embeds else "smollm2-135m-instruct"
            response = case.call(headers={"Authorization": f"Bearer {key}"}, timeout=120)
            statuses[response.status_code] += 1
            if response.status_code >= 500:
                failures.append(f"{case.operation.label}: {response.status_code} for {case.body!r:.300}")
            elif response.status_code >= 400 and "json" in str(response.headers.get("content-type")):
                body = response.json()
                if not ({"object", "message", "type"} <= body.keys() and "error" in body):
                    failures.append(f"{case.operation.label}: {response.status_code} without the error "
                                    f"shape: {body!r:.300}")

        probe()
    assert not failures, "\n".join(failures[:20])
    assert sum(statuses.values()) >= 100 and statuses[200] >= 20 and statuses[422] + statuses[400] >= 20
    assert fuzz_server.health()["status"] == "ok"
