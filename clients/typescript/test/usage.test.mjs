// Usage, invoice and account reads of a fresh account (its key in MAGISTRAL_API_KEY, its name in
// MAGISTRAL_ACCOUNT): they count exactly the requests this file makes.
import assert from "node:assert/strict";
import { test } from "node:test";
import { BadRequestError, Magistral } from "@magistral/client";
import { collect, env } from "./env.mjs";

const client = new Magistral({ baseURL: env("MAGISTRAL_BASE_URL"), apiKey: env("MAGISTRAL_API_KEY") });
const ACCOUNT = env("MAGISTRAL_ACCOUNT");
const REQUEST = { model: "magistral-medium-latest", messages: [{ role: "user", content: "Hi" }], max_tokens: 5 };

test("usage, invoice and account count this file's requests", async () => {
  const account = await client.account.retrieve();
  assert.equal(account.account, ACCOUNT);
  assert.equal(account.billing_status, "active");
  assert.ok(env("MAGISTRAL_API_KEY").startsWith(account.key.prefix));
  assert.ok(account.limits.requests_per_minute > 0);
  assert.deepEqual((await client.usage.report()).data, [], "a fresh account has no usage");

  const completed = (await client.chat.complete(REQUEST)).usage;
  const streamed = (await collect(client.chat.stream(REQUEST))).at(-1).usage;
  const prompt = completed.prompt_tokens + streamed.prompt_tokens;
  const output = completed.completion_tokens + streamed.completion_tokens;

  const today = new Date();
  const byModel = await client.usage.report({ groupBy: "model", start: today, end: today });
  assert.equal(byModel.account, ACCOUNT);
  assert.equal(byModel.start, today.toISOString().slice(0, 10));
  assert.deepEqual(byModel.data.map((e) => [e.model, e.requests, e.prompt_tokens, e.completion_tokens]),
    [["smollm2-135m-instruct", 2, prompt, output]]);
  const byDay = await client.usage.report({ groupBy: "day" });
  assert.deepEqual(byDay.data.map((e) => [e.day, e.total_tokens]), [[byModel.start, prompt + output]]);

  const invoice = await client.usage.invoice({ month: today });
  assert.equal(invoice.month, byModel.start.slice(0, 7));
  assert.equal(invoice.total_tokens, prompt + output);
  assert.deepEqual(invoice.lines.map((l) => [l.model, l.prompt_tokens, l.completion_tokens]),
    [["smollm2-135m-instruct", prompt, output]]);
  // the default price: $3.50 per million input tokens, $10.00 per million output tokens
  const listPrice = (prompt * 3.5 + output * 10) / 1e6;
  assert.ok(Math.abs(Number(invoice.lines[0].list_usd) - listPrice) <= 1e-6, invoice.lines[0].list_usd);
  assert.equal(invoice.total_micro_usd, Math.round(Number(invoice.total_usd) * 1e6));
});

test("a malformed month is a BadRequestError naming the parameter", async () => {
  await assert.rejects(client.usage.invoice({ month: "2026-13" }), (err) => {
    assert.ok(err instanceof BadRequestError);
    assert.equal(err.status, 400);
    assert.equal(err.body.param, "month");
    return true;
  });
});
