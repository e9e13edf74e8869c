// A chat completion: the answer, the reasoning trace (if the model thinks) and the token counts.
// Run: MAGISTRAL_BASE_URL=http://127.0.0.1:8000 MAGISTRAL_API_KEY=mg-... node examples/complete.mjs
import { Magistral } from "@magistral/client";

const client = new Magistral(); // baseURL and apiKey from $MAGISTRAL_BASE_URL and $MAGISTRAL_API_KEY
const response = await client.chat.complete({
  model: process.env.MAGISTRAL_MODEL ?? "magistral-medium-latest",
  messages: [{ role: "user", content: "Name three primary colors." }],
  max_tokens: 40,
});
if (response.thinking) console.log(`thinking: ${response.thinking}\n`);
console.log(response.text);
console.log(`usage: ${JSON.stringify(response.usage)}`);
