// The openai npm package, unchanged, against magistral: a forced tool call and its result sent
// back, json_schema, streaming (text and a tool call), and a 404 whose message the client shows.
import OpenAI from "openai";

import {
  API_KEY, ASK_CITY, ASK_WEATHER, BASE_URL, CITY_SCHEMA, MODEL, UNKNOWN_MODEL, WEATHER_PARAMETERS,
  report, weather,
} from "./common.mjs";

const client = new OpenAI({ apiKey: API_KEY, baseURL: `${BASE_URL}/v1`, maxRetries: 0 });
const tools = [{
  type: "function",
  function: { name: "get_weather", description: "Get the current weather in a city.",
              parameters: WEATHER_PARAMETERS },
}];
const common = { model: MODEL, temperature: 0, max_tokens: 128 };

await report({
  async tools() {
    const messages = [{ role: "user", content: ASK_WEATHER }];
    const first = await client.chat.completions.create({
      ...common, messages, tools, tool_choice: { type: "function", function: { name: "get_weather" } },
    });
    const message = first.choices[0].message;
    messages.push(message);
    for (const call of message.tool_calls) {
      messages.push({ role: "tool", tool_call_id: call.id,
                      content: weather(JSON.parse(call.function.arguments)) });
    }
    const final = await client.chat.completions.create({ ...common, messages, tools, tool_choice: "none" });
    return { finish_reason: first.choices[0].finish_reason, tool_calls: message.tool_calls,
             final: final.choices[0].message, final_finish_reason: final.choices[0].finish_reason };
  },
  async json_schema() {
    const response = await client.chat.completions.create({
      ...common, messages: [{ role: "user", content: ASK_CITY }],
      response_format: { type: "json_schema",
                         json_schema: { name: "city", schema: CITY_SCHEMA, strict: true } },
    });
    return { content: response.choices[0].message.content };
  },
  async stream_text() {
    const stream = await client.chat.completions.create({
      ...common, max_tokens: 16, stream: true, stream_options: { include_usage: true },
      messages: [{ role: "user", content: "Name a fruit." }],
    });
    let text = "", chunks = 0, finish_reason = null, usage = null;
    for await (const chunk of stream) {
      chunks += 1;
      if (chunk.usage) usage = chunk.usage;
      for (const choice of chunk.choices) {
        text += choice.delta.content ?? "";
        finish_reason = choice.finish_reason ?? finish_reason;
      }
    }
    return { text, chunks, finish_reason, usage };
  },
  async stream_tool_call() {
    const stream = await client.chat.completions.create({
      ...common, stream: true, messages: [{ role: "user", content: ASK_WEATHER }], tools,
      tool_choice: "required",
    });
    const calls = [];  // merged from the deltas the way OpenAI clients merge them
    let finish_reason = null;
    for await (const chunk of stream) {
      for (const choice of chunk.choices) {
        finish_reason = choice.finish_reason ?? finish_reason;
        for (const delta of choice.delta.tool_calls ?? []) {
          const call = calls[delta.index] ??= { id: "", name: "", arguments: "" };
          call.id += delta.id ?? "";
          call.name += delta.function?.name ?? "";
          call.arguments += delta.function?.arguments ?? "";
        }
      }
    }
    return { calls, finish_reason };
  },
  async error() {
    try {
      await client.chat.completions.create({ ...common, model: UNKNOWN_MODEL,
                                             messages: [{ role: "user", content: "hi" }] });
      return { raised: false };
    } catch (err) {
      return { raised: true, class: err.constructor.name, not_found: err instanceof OpenAI.NotFoundError,
               status: err.status, message: err.message, code: err.code, param: err.param };
    }
  },
});
