// The @mistralai/mistralai npm package, unchanged, against magistral: a forced tool call and its
// result sent back, json_schema, streaming (text and a tool call), and a 404 the client shows.
import { Mistral } from "@mistralai/mistralai";

import {
  API_KEY, ASK_CITY, ASK_WEATHER, BASE_URL, CITY_SCHEMA, MODEL, UNKNOWN_MODEL, WEATHER_PARAMETERS,
  report, weather,
} from "./common.mjs";

const client = new Mistral({ apiKey: API_KEY, serverURL: BASE_URL });
const tools = [{
  type: "function",
  function: { name: "get_weather", description: "Get the current weather in a city.",
              parameters: WEATHER_PARAMETERS },
}];
const common = { model: MODEL, temperature: 0, maxTokens: 128 };
const args = (call) => typeof call.function.arguments === "string"
  ? JSON.parse(call.function.arguments) : call.function.arguments;

await report({
  async tools() {
    const messages = [{ role: "user", content: ASK_WEATHER }];
    const first = await client.chat.complete({ ...common, messages, tools, toolChoice: "any" });
    const message = first.choices[0].message;
    messages.push({ role: "assistant", content: message.content ?? "", toolCalls: message.toolCalls });
    for (const call of message.toolCalls) {
      messages.push({ role: "tool", toolCallId: call.id, name: call.function.name,
                      content: weather(args(call)) });
    }
    const final = await client.chat.complete({ ...common, messages, tools, toolChoice: "none" });
    return { finish_reason: first.choices[0].finishReason, tool_calls: message.toolCalls,
             final: final.choices[0].message, final_finish_reason: final.choices[0].finishReason };
  },
  async json_schema() {
    const response = await client.chat.complete({
      ...common, messages: [{ role: "user", content: ASK_CITY }],
      responseFormat: { type: "json_schema",
                        jsonSchema: { name: "city", schemaDefinition: CITY_SCHEMA, strict: true } },
    });
    return { content: response.choices[0].message.content };
  },
  async stream_text() {
    const stream = await client.chat.stream({
      ...common, maxTokens: 16, messages: [{ role: "user", content: "Name a fruit." }],
    });
    let text = "", chunks = 0, finish_reason = null, usage = null;
    for await (const event of stream) {
      chunks += 1;
      if (event.data.usage) usage = event.data.usage;
      for (const choice of event.data.choices) {
        text += typeof choice.delta.content === "string" ? choice.delta.content : "";
        finish_reason = choice.finishReason ?? finish_reason;
      }
    }
    return { text, chunks, finish_reason, usage };
  },
  async stream_tool_call() {
    const stream = await client.chat.stream({
      ...common, messages: [{ role: "user", content: ASK_WEATHER }], tools, toolChoice: "any",
    });
    const calls = [];
    let finish_reason = null;
    for await (const event of stream) {
      for (const choice of event.data.choices) {
        finish_reason = choice.finishReason ?? finish_reason;
        for (const call of choice.delta.toolCalls ?? []) {  // Mistral sends each call whole
          calls.push({ id: call.id, name: call.function.name, arguments: call.function.arguments });
        }
      }
    }
    return { calls, finish_reason };
  },
  async error() {
    try {
      await client.chat.complete({ ...common, model: UNKNOWN_MODEL, messages: [{ role: "user", content: "hi" }] });
      return { raised: false };
    } catch (err) {
      return { raised: true, class: err.constructor.name, status: err.statusCode, message: err.message };
    }
  },
});
