// Retries, Retry-After, timeouts, aborts and typed errors against tests/loopback.py's endpoint
// (MAGISTRAL_SCRIPTED_URL): each request carries its script, a list of [status, headers, delay s]
// answers, after which the endpoint answers 200; every body says which attempt it answered.
import assert from "node:assert/strict";
import { createServer } from "node:net";
import { test } from "node:test";
import {
  APIConnectionError,
  APIStatusError,
  APITimeoutError,
  BadRequestError,
  InternalServerError,
  Magistral,
  RateLimitError,
} from "@magistral/client";
import { env } from "./env.mjs";

const SCRIPTED_URL = env("MAGISTRAL_SCRIPTED_URL");
let scripts = 0;

// A client and a request whose answers the endpoint plays in turn.
function scripted(answers, options = {}) {
  const client = new Magistral({ baseURL: SCRIPTED_URL, apiKey: "k", ...options });
  const request = { model: "m", messages: [{ role: "user", content: "Hi" }], script: `${process.pid}-${++scripts}`, answers };
  return { client, request };
}

async function timed(promise) {
  const started = Date.now();
  const value = await promise;
  return [value, Date.now() - started];
}

test("429 is retried after the server's Retry-After, 503 after a backoff", async () => {
  const { client, request } = scripted([[429, { "Retry-After": "1" }, 0], [503, {}, 0]], { maxRetries: 2 });
  const [response, elapsed] = await timed(client.chat.complete(request));
  assert.equal(response.raw.attempt, 3);
  assert.ok(elapsed >= 950 + 250, `waited as told, then at least 250 ms: ${elapsed} ms`);
  assert.ok(elapsed < 5000, `${elapsed} ms`);
  assert.equal(response.text, "Hello!");
  assert.equal(response.thinking, "hmm");
  assert.equal(response.usage.total_tokens, 5);
});

test("a Retry-After HTTP date is waited for", async () => {
  const when = new Date(Date.now() + 3000).toUTCString(); // whole seconds: 2 to 3 s from now
  const { client, request } = scripted([[503, { "Retry-After": when }, 0]]);
  const [response, elapsed] = await timed(client.chat.complete(request));
  assert.equal(response.raw.attempt, 2);
  assert.ok(elapsed >= 1950 && elapsed < 5000, `${elapsed} ms`);
});

test("client errors are not retried and carry the server's body and headers", async () => {
  const { client, request } = scripted([[400, { "X-Request-Id": "abc" }, 0]], { maxRetries: 3 });
  await assert.rejects(client.chat.complete(request), (err) => {
    assert.ok(err instanceof BadRequestError && err instanceof APIStatusError);
    assert.equal(err.status, 400);
    assert.equal(err.message, "scripted 400");
    assert.equal(err.body.attempt, 1);
    assert.equal(err.headers["x-request-id"], "abc");
    return true;
  });
});

test("retries stop after maxRetries with the last error", async () => {
  const limited = scripted(Array(3).fill([429, { "Retry-After": "0" }, 0]), { maxRetries: 1 });
  await assert.rejects(limited.client.chat.complete(limited.request), (err) => {
    assert.ok(err instanceof RateLimitError);
    assert.equal(err.body.attempt, 2);
    assert.equal(err.headers["retry-after"], "0");
    return true;
  });
  const failing = scripted(Array(3).fill([500, {}, 0]), { maxRetries: 2 });
  const started = Date.now();
  await assert.rejects(failing.client.chat.complete(failing.request), (err) => {
    assert.ok(err instanceof InternalServerError);
    assert.equal(err.body.attempt, 3);
    return true;
  });
  assert.ok(Date.now() - started >= 250 + 500, "exponential backoff between the attempts");
  const none = scripted([[503, {}, 0]], { maxRetries: 0 });
  await assert.rejects(none.client.chat.complete(none.request), { status: 503 });
});

test("a slow answer times out; the retry gets the answer", async () => {
  const retried = scripted([[200, {}, 3]], { timeoutMs: 500, maxRetries: 1 });
  const [response, elapsed] = await timed(retried.client.chat.complete(retried.request));
  assert.equal(response.raw.attempt, 2);
  assert.ok(elapsed >= 500 && elapsed < 2900, `${elapsed} ms`);
  const once = scripted([[200, {}, 3]], { timeoutMs: 500, maxRetries: 0 });
  await assert.rejects(once.client.chat.complete(once.request), (err) => {
    assert.ok(err instanceof APITimeoutError && err instanceof APIConnectionError);
    return true;
  });
});

test("an abort during a Retry-After wait rejects at once", async () => {
  const { client, request } = scripted([[429, { "Retry-After": "30" }, 0]]);
  const [, elapsed] = await timed(assert.rejects(
    client.chat.complete(request, { signal: AbortSignal.timeout(300) }),
    { name: "TimeoutError" }, // AbortSignal.timeout's reason
  ));
  assert.ok(elapsed < 3000, `${elapsed} ms`);
});

test("a refused connection is retried, then an APIConnectionError", async () => {
  const closed = createServer();
  await new Promise((resolve) => closed.listen(0, "127.0.0.1", resolve));
  const port = closed.address().port;
  await new Promise((resolve) => closed.close(resolve));
  const client = new Magistral({ baseURL: `http://127.0.0.1:${port}`, apiKey: "k", maxRetries: 1 });
  const started = Date.now();
  await assert.rejects(client.models.list(), (err) => {
    assert.ok(err instanceof APIConnectionError && !(err instanceof APITimeoutError));
    assert.match(err.message, /ECONNREFUSED/);
    return true;
  });
  assert.ok(Date.now() - started >= 250, "one backoff before the retry");
});
