"""A scriptable JSON endpoint on 127.0.0.1 for tests that need to control a server's answers."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Callable
from typing import Any

# respond(request body) → (status, extra headers, response body)
Responder = Callable[[dict[str, Any]], tuple[int, dict[str, str], dict[str, Any]]]


class LoopbackEndpoint:
    def __init__(self, respond: Responder):
        self.requests = 0

        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests += 1
                status, headers, answer = respond(body)
                payload = json.dumps(answer).encode()
                self.send_response(status)
                for name, value in {**headers, "Content-Type": "application/json",
                                    "Content-Length": str(len(payload))}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()


def completion(model: str, content: Any) -> dict[str, Any]:
    """A chat.completion body with the given message content."""
    return {"id": "x" * 32, "object": "chat.completion", "created": 0, "model": model,
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": content}}]}
