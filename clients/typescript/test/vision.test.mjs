// Images and thinking against the tiny random-weight Mistral 3 (vision + reasoning) checkpoint:
// MAGISTRAL_MODEL names it, MAGISTRAL_THINK_TOKEN is the id of its [THINK] token.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { pathToFileURL } from "node:url";
import { Magistral, userMessage } from "@magistral/client";
import { collect, env, joined } from "./env.mjs";

const client = new Magistral({ baseURL: env("MAGISTRAL_BASE_URL"), apiKey: env("MAGISTRAL_API_KEY") });
const MODEL = env("MAGISTRAL_MODEL");
const PNG = env("MAGISTRAL_TEST_PNG");

test("a picture from a path, a Buffer or a file URL reaches the model as the same image", async () => {
  const ask = (...images) =>
    client.chat.complete({ model: MODEL, max_tokens: 4, temperature: 0, messages: [userMessage("What is this?", ...images)] });
  // one at a time: the server's engine fails on identical concurrent image requests
  const textOnly = await ask();
  const fromPath = await ask(PNG);
  const fromBuffer = await ask(readFileSync(PNG));
  const fromFileURL = await ask(pathToFileURL(PNG));
  assert.ok(fromPath.usage.prompt_tokens > textOnly.usage.prompt_tokens + 10, "the image's tokens are counted");
  for (const other of [fromBuffer, fromFileURL]) {
    assert.deepEqual(other.usage, fromPath.usage);
    assert.equal(other.text, fromPath.text);
    assert.equal(other.thinking, fromPath.thinking);
  }
});

test("thinking chunks: response.thinking, and thinking events in the stream", async () => {
  // [THINK] forced by logit_bias: the model writes a reasoning trace, Mistral's thinking chunks
  const request = {
    model: MODEL,
    messages: [{ role: "user", content: "What is the weather in Paris?" }],
    max_tokens: 4,
    temperature: 0,
    logit_bias: { [env("MAGISTRAL_THINK_TOKEN")]: 100 },
  };
  const response = await client.chat.complete(request);
  assert.equal(response.message.content[0].type, "thinking");
  assert.ok(response.thinking.length > 0);
  assert.equal(response.text, "");
  const events = await collect(client.chat.stream(request));
  assert.equal(joined(events, "thinking"), response.thinking);
  assert.equal(joined(events, "text"), "");
  assert.ok(events.filter((e) => e.type === "thinking").length >= 2, "thinking arrives token by token");
  assert.deepEqual(events.at(-1), { type: "end", finishReason: "length", usage: response.usage });
});
