// What needs no model: image helpers (MAGISTRAL_TEST_PNG / _JPEG are pictures made by PIL), the
// retry delays, and SSE framing from a node:http server that sends awkward but valid streams.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createServer } from "node:http";
import { test } from "node:test";
import { pathToFileURL } from "node:url";
import {
  APIConnectionError,
  APITimeoutError,
  Magistral,
  backoffMs,
  imageURL,
  retryAfterMs,
  userMessage,
} from "@magistral/client";
import { collect, env } from "./env.mjs";

const PNG = env("MAGISTRAL_TEST_PNG");
const JPEG = env("MAGISTRAL_TEST_JPEG");

test("images from a path, a file URL and bytes become the same data URL", () => {
  const fromPath = imageURL(PNG);
  assert.ok(fromPath.startsWith("data:image/png;base64,"));
  assert.deepEqual(Buffer.from(fromPath.split(",")[1], "base64"), readFileSync(PNG));
  assert.equal(imageURL(readFileSync(PNG)), fromPath);
  assert.equal(imageURL(new Uint8Array(readFileSync(PNG))), fromPath);
  assert.equal(imageURL(pathToFileURL(PNG)), fromPath);
  assert.ok(imageURL(readFileSync(JPEG)).startsWith("data:image/jpeg;base64,"));
  assert.ok(imageURL(JPEG).startsWith("data:image/jpeg;base64,"));
  const webp = Buffer.from("RIFF\0\0\0\0WEBPVP8 ");
  assert.ok(imageURL(webp).startsWith("data:image/webp;base64,"));
  assert.ok(imageURL(Buffer.from("GIF89a")).startsWith("data:image/gif;base64,"));
  assert.ok(imageURL(Buffer.from("not an image")).startsWith("data:application/octet-stream;base64,"));
});

test("http(s) and data: URLs pass through unfetched; userMessage builds chunks", () => {
  for (const url of ["https://example.com/a.png", "http://example.com/b.jpg", "data:image/png;base64,AAAA"]) {
    assert.equal(imageURL(url), url);
  }
  assert.equal(imageURL(new URL("https://example.com/a.png")), "https://example.com/a.png");
  assert.deepEqual(userMessage("Hi"), { role: "user", content: "Hi" });
  assert.deepEqual(userMessage("What is this?", "https://example.com/a.png", readFileSync(PNG)), {
    role: "user",
    content: [
      { type: "text", text: "What is this?" },
      { type: "image_url", image_url: "https://example.com/a.png" },
      { type: "image_url", image_url: imageURL(PNG) },
    ],
  });
  assert.throws(() => imageURL(42), TypeError);
  assert.throws(() => imageURL("/no/such/picture.png"), /ENOENT/);
});

test("Retry-After in seconds or as an HTTP date; exponential backoff with jitter, capped", () => {
  assert.equal(retryAfterMs({ "retry-after": "2" }), 2000);
  assert.equal(retryAfterMs(new Headers({ "Retry-After": "0.5" })), 500);
  const inTen = retryAfterMs({ "retry-after": new Date(Date.now() + 10_000).toUTCString() });
  assert.ok(inTen > 8_000 && inTen <= 10_000, String(inTen));
  assert.equal(retryAfterMs({ "retry-after": new Date(Date.now() - 10_000).toUTCString() }), 0);
  assert.equal(retryAfterMs({ "retry-after": "soon" }), undefined);
  assert.equal(retryAfterMs({}), undefined);
  assert.equal(backoffMs(0, { "retry-after": "3" }), 3000);
  assert.equal(backoffMs(0, { "retry-after": "3600" }), 60_000);
  for (let i = 0; i < 20; i++) {
    const [first, fourth] = [backoffMs(0), backoffMs(3)];
    assert.ok(first >= 250 && first <= 500, String(first));
    assert.ok(fourth >= 2000 && fourth <= 4000, String(fourth));
    assert.ok(backoffMs(30) <= 60_000);
  }
});

// A server that writes `parts` (strings or byte buffers) with pauses, then ends the response
// (or, with `then: "stall"` or `"drop"`, hangs or breaks the connection).
async function sseServer(parts, then = "end") {
  const server = createServer(async (request, response) => {
    response.writeHead(200, { "Content-Type": "text/event-stream" });
    for (const part of parts) {
      response.write(part);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    if (then === "end") response.end();
    if (then === "drop") response.socket.destroy();
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    client: new Magistral({ baseURL: `http://127.0.0.1:${server.address().port}`, apiKey: "k", timeoutMs: 500 }),
    close: () => {
      server.closeAllConnections();
      server.close();
    },
  };
}

const chunk = (delta, extra = {}) =>
  JSON.stringify({ id: "x", object: "chat.completion.chunk", choices: [{ index: 0, delta, finish_reason: null }], ...extra });
const REQUEST = { model: "m", messages: [{ role: "user", content: "Hi" }] };

test("SSE framing: comments, CRLF, split UTF-8, multi-line data, reasoning_content, tool calls", async () => {
  const call = { id: "abcdefghi", type: "function", function: { name: "f", arguments: "{}" }, index: 0 };
  const accented = Buffer.from(`data: ${chunk({ content: "café" })}\n\n`);
  const cut = accented.indexOf(Buffer.from("é")) + 1; // inside the two bytes of "é"
  const last = JSON.stringify({ choices: [{ index: 0, delta: {}, finish_reason: "stop" }], usage: { total_tokens: 9 } });
  const { client, close } = await sseServer([
    ": keep-alive\n\n",
    `data: ${chunk({ role: "assistant", content: "" })}\r\n\r\n`,
    `data:${chunk({ reasoning_content: "let me see" })}\n\n`,
    accented.subarray(0, cut),
    accented.subarray(cut),
    `data: {"choices": [{"index": 0,\ndata: "delta": {"tool_calls": [${JSON.stringify(call)}]}}]}\n\n`,
    `data: ${last}\n\ndata: [DONE]\n\ndata: ${chunk({ content: "after the end" })}\n\n`,
  ]);
  try {
    assert.deepEqual(await collect(client.chat.stream(REQUEST)), [
      { type: "thinking", text: "let me see" },
      { type: "text", text: "café" },
      { type: "tool_call", toolCall: call },
      { type: "end", finishReason: "stop", usage: { total_tokens: 9 } },
    ]);
  } finally {
    close();
  }
});

test("a stream that stalls times out; one that breaks is a connection error", async () => {
  for (const [then, Expected] of [["stall", APITimeoutError], ["drop", APIConnectionError]]) {
    const { client, close } = await sseServer([`data: ${chunk({ content: "Hel" })}\n\n`], then);
    const seen = [];
    try {
      await assert.rejects(async () => {
        for await (const event of client.chat.stream(REQUEST)) seen.push(event);
      }, Expected);
      assert.deepEqual(seen, [{ type: "text", text: "Hel" }]);
    } finally {
      close();
    }
  }
});
