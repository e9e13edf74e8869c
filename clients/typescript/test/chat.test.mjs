// Chat, models, tools, embeddings and aborts against a real `magistral serve` (SmolLM2).
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  APIStatusError,
  AuthenticationError,
  ChatResponse,
  Magistral,
  NotFoundError,
} from "@magistral/client";
import { busy, collect, env, joined, waitIdle } from "./env.mjs";

const BASE_URL = env("MAGISTRAL_BASE_URL");
const client = new Magistral({ baseURL: BASE_URL, apiKey: env("MAGISTRAL_API_KEY") });
const MODEL = "magistral-medium-latest";
const HELLO = [{ role: "user", content: "Say hello." }];
// A long answer that cannot end early: <|im_end|> (token 2) is banned.
const ENDLESS = {
  model: MODEL,
  messages: [{ role: "user", content: "Write a very long essay about the history of Rome." }],
  max_tokens: 4000,
  logit_bias: { 2: -100 },
};
const WEATHER = {
  type: "function",
  function: {
    name: "get_weather",
    description: "Weather in a city",
    parameters: {
      type: "object",
      properties: { city: { type: "string", maxLength: 30 }, unit: { enum: ["celsius", "fahrenheit"] } },
      required: ["city", "unit"],
    },
  },
};

test("models are listed, an alias resolves, an unknown model is a NotFoundError", async () => {
  assert.deepEqual((await client.models.list()).map((m) => m.id), ["smollm2-135m-instruct", "magistral-mini", "all-minilm-l6-v2"]);
  const card = await client.models.retrieve(MODEL);
  assert.equal(card.id, "smollm2-135m-instruct");
  assert.ok(card.aliases.includes(MODEL));
  await assert.rejects(client.models.retrieve("no-such-model"), (err) => {
    assert.ok(err instanceof NotFoundError && err instanceof APIStatusError);
    assert.equal(err.status, 404);
    assert.match(err.message, /no-such-model/);
    assert.equal(err.body.code, "model_not_found");
    return true;
  });
});

test("complete and stream give the same greedy answer, the stream ends with usage", async () => {
  const request = { model: MODEL, messages: HELLO, max_tokens: 8, temperature: 0 };
  const response = await client.chat.complete(request);
  assert.ok(response instanceof ChatResponse);
  assert.ok(response.text.trim(), "an answer");
  assert.equal(response.thinking, "");
  assert.ok(["stop", "length"].includes(response.finishReason));
  assert.deepEqual(response.toolCalls, []);
  assert.equal(response.usage.total_tokens, response.usage.prompt_tokens + response.usage.completion_tokens);
  assert.equal(response.model, "smollm2-135m-instruct");
  assert.match(response.id, /^[0-9a-f]{32}$/);

  const events = await collect(client.chat.stream(request));
  assert.equal(joined(events, "text"), response.text);
  assert.deepEqual(events.slice(0, -1).map((e) => e.type), Array(events.length - 1).fill("text"));
  const end = events.at(-1);
  assert.equal(end.type, "end");
  assert.equal(end.finishReason, response.finishReason);
  assert.deepEqual(end.usage, response.usage);
});

test("a wrong key is an AuthenticationError carrying the server's error", async () => {
  const wrong = new Magistral({ baseURL: BASE_URL, apiKey: "wrong-key", maxRetries: 5 });
  const started = Date.now();
  await assert.rejects(wrong.chat.complete({ model: MODEL, messages: HELLO }), (err) => {
    assert.ok(err instanceof AuthenticationError);
    assert.equal(err.name, "AuthenticationError");
    assert.equal(err.status, 401);
    assert.equal(err.body.type, "authentication_error");
    assert.equal(err.message, err.body.message);
    assert.match(err.headers["content-type"], /json/);
    return true;
  });
  assert.ok(Date.now() - started < 2000, "a 401 is not retried");
  // the stream's request fails the same way, at the first step of the loop
  await assert.rejects(collect(wrong.chat.stream({ model: MODEL, messages: HELLO })), AuthenticationError);
});

test("forced tool calls: toolCalls in the response, tool_call events in the stream", async () => {
  const request = {
    model: MODEL,
    messages: [{ role: "user", content: "What is the weather in Paris?" }],
    tools: [WEATHER],
    tool_choice: "any",
    temperature: 0,
    max_tokens: 80,
  };
  const response = await client.chat.complete(request);
  assert.equal(response.finishReason, "tool_calls");
  assert.ok(response.toolCalls.length >= 1);
  for (const call of response.toolCalls) {
    assert.match(call.id, /^[A-Za-z0-9]{9}$/);
    assert.equal(call.function.name, "get_weather");
    const args = JSON.parse(call.function.arguments);
    assert.equal(typeof args.city, "string");
    assert.ok(["celsius", "fahrenheit"].includes(args.unit));
  }
  const events = await collect(client.chat.stream(request));
  const calls = events.filter((e) => e.type === "tool_call").map((e) => e.toolCall);
  assert.deepEqual(calls.map((c) => [c.function.name, c.function.arguments]),
    response.toolCalls.map((c) => [c.function.name, c.function.arguments]));
  assert.equal(events.at(-1).type, "end");
  assert.equal(events.at(-1).finishReason, "tool_calls");
});

test("aborting a stream ends the loop with the signal's reason and the server stops generating", async () => {
  await waitIdle(BASE_URL);
  const controller = new AbortController();
  const seen = [];
  await assert.rejects(
    (async () => {
      for await (const event of client.chat.stream(ENDLESS, { signal: controller.signal })) {
        seen.push(event);
        if (seen.length === 3) {
          assert.ok((await busy(BASE_URL)) >= 1, "the server is generating");
          controller.abort();
        }
      }
    })(),
    { name: "AbortError" },
  );
  assert.equal(seen.length, 3, "no event after the abort");
  await waitIdle(BASE_URL); // 4000 tokens would take minutes: the server saw the connection close
});

test("breaking out of a stream closes the connection too", async () => {
  await waitIdle(BASE_URL);
  let count = 0;
  for await (const event of client.chat.stream(ENDLESS)) {
    assert.equal(event.type, "text");
    if (++count === 3) break;
  }
  await waitIdle(BASE_URL);
});

test("aborting a completion rejects it; an aborted signal sends nothing", async () => {
  await waitIdle(BASE_URL);
  const controller = new AbortController();
  const pending = client.chat.complete(ENDLESS, { signal: controller.signal });
  setTimeout(() => controller.abort(new Error("changed my mind")), 500);
  await assert.rejects(pending, /changed my mind/);
  await waitIdle(BASE_URL);
  await assert.rejects(client.models.list({ signal: AbortSignal.abort() }), { name: "AbortError" });
});

test("embeddings in input order and legacy completions", async () => {
  const [cat, kitten, car] = await client.embeddings.create({
    model: "all-minilm-l6-v2",
    input: ["a cat", "a kitten", "a car"],
  });
  const dot = (a, b) => a.reduce((sum, x, i) => sum + x * b[i], 0);
  assert.equal(cat.length, 384);
  assert.ok(dot(cat, kitten) > dot(cat, car), "the order is the input's");
  const legacy = await client.completions.create({ model: MODEL, prompt: "The capital of France is", max_tokens: 3, temperature: 0 });
  assert.equal(legacy.object, "text_completion");
  assert.ok(legacy.choices[0].text.length > 0);
});
