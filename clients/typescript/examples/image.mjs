// A question about a local picture (sent as a base64 data URL) to a vision model.
// Run: MAGISTRAL_MODEL=<a vision model> node examples/image.mjs photo.png
import { Magistral, userMessage } from "@magistral/client";

const [picture = "photo.png"] = process.argv.slice(2); // a path, or an http(s) URL
const client = new Magistral();
const response = await client.chat.complete({
  model: process.env.MAGISTRAL_MODEL ?? "magistral-small-latest",
  messages: [userMessage("What is in this picture?", picture)],
  max_tokens: 40,
});
console.log(response.text);
console.log(`prompt tokens: ${response.usage?.prompt_tokens} (the picture's included)`);
