"""Every metered route refuses a request that could pass a budget, with the same 402: the
check sits where requests are admitted (`Platform.open_call`), not in each route."""

from __future__ import annotations

from magistral.platform.accounts import set_budget
from magistral.platform.store import Store
from tests.conftest import Server, new_account, new_key

REQUESTS = {
    "/v1/chat/completions": {"model": "magistral-medium-latest", "max_tokens": 4,
                             "messages": [{"role": "user", "content": "Hi"}]},
    "/v1/completions": {"model": "magistral-medium-latest", "prompt": "Hi", "max_tokens": 4},
    "/v1/embeddings": {"model": "mistral-embed", "input": ["Hi"]},
}


def test_every_metered_route_refuses_past_the_budget_with_402(server: Server) -> None:
    account = new_account(server.database_url)
    key = new_key(server.database_url, account)
    for path, body in REQUESTS.items():
        assert server.post(path, body, key).status_code == 200, path
    store = Store(server.database_url)
    set_budget(store, account, 0)  # nothing more this month
    store.dispose()
    for path, body in REQUESTS.items():
        refused = server.post(path, body, key)
        assert refused.status_code == 402, (path, refused.text)
        error = refused.json()
        assert error["code"] == "budget_exceeded" and error["type"] == "invalid_request_error"
        assert error["error"]["code"] == "budget_exceeded"  # the openai shape too
        assert f"account '{account}' has spent $" in error["message"]
    streamed = server.post("/v1/chat/completions", {**REQUESTS["/v1/chat/completions"], "stream": True}, key)
    assert streamed.status_code == 402  # before any byte of a stream
