// magistral's TypeScript / Node.js SDK for Mistral-compatible chat APIs: thinking kept apart from
// the answer, typed stream events, image helpers, retries with backoff, typed errors.
export { Magistral, DEFAULT_BASE_URL } from "./client.js";
export type { ClientOptions, RequestOptions, UsageQuery } from "./client.js";
export * from "./errors.js";
export { imageChunk, imageURL, userMessage } from "./images.js";
export type { ImageInput } from "./images.js";
export { RETRY_STATUSES, backoffMs, retryAfterMs } from "./retry.js";
export { ChatResponse, splitContent, streamEvents } from "./types.js";
export type * from "./types.js";
export { Magistral as default } from "./client.js";
