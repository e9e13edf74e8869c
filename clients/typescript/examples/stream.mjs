// A streamed chat completion: thinking and answer printed as they arrive, then the end event.
// Run: MAGISTRAL_BASE_URL=http://127.0.0.1:8000 MAGISTRAL_API_KEY=mg-... node examples/stream.mjs
import { Magistral } from "@magistral/client";

const client = new Magistral();
const controller = new AbortController(); // Ctrl-C stops the stream and closes the connection
process.once("SIGINT", () => controller.abort());

const request = {
  model: process.env.MAGISTRAL_MODEL ?? "magistral-medium-latest",
  messages: [{ role: "user", content: "Write a haiku about the sea." }],
  max_tokens: 60,
};
for await (const event of client.chat.stream(request, { signal: controller.signal })) {
  if (event.type === "thinking") process.stdout.write(`\x1b[2m${event.text}\x1b[0m`); // dimmed
  else if (event.type === "text") process.stdout.write(event.text);
  else if (event.type === "tool_call") console.log(`\n[tool call: ${event.toolCall.function.name}]`);
  else console.log(`\n[end: ${event.finishReason}, ${event.usage?.completion_tokens} tokens]`);
}
