// The shapes of the API (field names as the server sends them) and what the client returns: a
// completed chat response and the events of a stream, with the answer and the reasoning trace
// (thinking chunks) kept apart.

export interface TextChunk {
  type: "text";
  text: string;
}
export interface ImageURLChunk {
  type: "image_url";
  image_url: string | { url: string; detail?: string };
}
export interface ThinkingChunk {
  type: "thinking";
  thinking: TextChunk[];
  closed?: boolean;
}
export type ContentChunk = TextChunk | ImageURLChunk | ThinkingChunk;
export type Content = string | ContentChunk[] | null;

export interface ToolCall {
  id: string;
  type: "function";
  function: { name: string; arguments: string };
  index?: number;
}

export interface Message {
  role: "system" | "user" | "assistant" | "tool";
  content?: Content;
  tool_calls?: ToolCall[] | null;
  tool_call_id?: string;
  name?: string;
  prefix?: boolean;
  reasoning_content?: string; // the opt-in OpenAI-style reasoning field
}

export interface Tool {
  type: "function";
  function: { name: string; description?: string; parameters?: Record<string, unknown> };
}

export interface ChatRequest {
  model: string;
  messages: Message[];
  temperature?: number | null;
  top_p?: number;
  max_tokens?: number | null;
  stop?: string | string[];
  random_seed?: number | null;
  response_format?:
    | { type: "text" | "json_object" }
    | { type: "json_schema"; json_schema: { name: string; schema: Record<string, unknown>; strict?: boolean } };
  tools?: Tool[];
  tool_choice?: "auto" | "none" | "any" | "required" | { type: "function"; function: { name: string } };
  parallel_tool_calls?: boolean;
  presence_penalty?: number;
  frequency_penalty?: number;
  n?: number;
  prompt_mode?: "reasoning" | null;
  safe_prompt?: boolean;
  [field: string]: unknown; // anything else (logit_bias, ...) is sent as it is
}

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

export interface ChatCompletion {
  id: string;
  object: "chat.completion";
  created: number;
  model: string;
  usage?: Usage;
  choices: { index: number; finish_reason: string | null; message: Message }[];
}

/** (text, thinking) of a message's or delta's content: a string, or Mistral's chunk list. */
export function splitContent(content: Content | undefined, reasoningContent?: string | null): [string, string] {
  if (content == null || typeof content === "string") return [content ?? "", reasoningContent ?? ""];
  let text = "";
  let thinking = "";
  for (const chunk of content) {
    if (chunk.type === "text") text += chunk.text ?? "";
    else if (chunk.type === "thinking") thinking += (chunk.thinking ?? []).map((t) => t.text ?? "").join("");
  }
  return [text, thinking];
}

export class ChatResponse {
  /** `raw` is the JSON body as the server sent it. */
  constructor(readonly raw: ChatCompletion) {}

  get id(): string {
    return this.raw.id;
  }
  get model(): string {
    return this.raw.model ?? "";
  }
  get message(): Message {
    return this.raw.choices[0].message;
  }
  /** The answer, without the reasoning trace. */
  get text(): string {
    return splitContent(this.message.content, this.message.reasoning_content)[0];
  }
  /** The reasoning trace (thinking chunks, or `reasoning_content`); "" when there is none. */
  get thinking(): string {
    return splitContent(this.message.content, this.message.reasoning_content)[1];
  }
  get finishReason(): string | null {
    return this.raw.choices[0].finish_reason ?? null;
  }
  get usage(): Usage | undefined {
    return this.raw.usage;
  }
  get toolCalls(): ToolCall[] {
    return this.message.tool_calls ?? [];
  }
}

/** One event of `chat.stream`: answer text, thinking text, a whole tool call, then the end. */
export type StreamEvent =
  | { type: "text"; text: string }
  | { type: "thinking"; text: string }
  | { type: "tool_call"; toolCall: ToolCall }
  | { type: "end"; finishReason: string; usage: Usage | null };

interface ChunkPayload {
  choices?: { delta?: Partial<Message>; finish_reason?: string | null }[];
  usage?: Usage;
}

/** The events of one `data:` chunk of a chat completion stream. */
export function streamEvents(payload: ChunkPayload): StreamEvent[] {
  const choice = payload.choices?.[0];
  if (!choice) return []; // e.g. an OpenAI-style usage-only chunk
  const events: StreamEvent[] = [];
  const delta = choice.delta ?? {};
  if (Array.isArray(delta.content)) {
    for (const part of delta.content) {
      const [text, thinking] = splitContent([part]);
      if (thinking) events.push({ type: "thinking", text: thinking });
      if (text) events.push({ type: "text", text });
    }
  } else {
    if (delta.reasoning_content) events.push({ type: "thinking", text: delta.reasoning_content });
    if (delta.content) events.push({ type: "text", text: delta.content });
  }
  // Mistral sends each tool call whole in one delta
  for (const toolCall of delta.tool_calls ?? []) events.push({ type: "tool_call", toolCall });
  if (choice.finish_reason) {
    events.push({ type: "end", finishReason: choice.finish_reason, usage: payload.usage ?? null });
  }
  return events;
}

export interface ModelCard {
  id: string;
  object: "model";
  created: number;
  owned_by: string;
  name?: string;
  description?: string;
  max_context_length?: number;
  aliases?: string[];
  default_model_temperature?: number | null;
  type?: string;
  capabilities?: Record<string, boolean>;
  [field: string]: unknown;
}

export interface UsageEntry {
  requests: number;
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  cost_usd: string; // a decimal, at list price
  day?: string;
  key?: number; // the key's id
  key_name?: string;
  model?: string;
}

export interface UsageReport {
  object: "list";
  account: string;
  start: string;
  end: string;
  group_by: "day" | "key" | "model";
  data: UsageEntry[];
}

export interface Invoice {
  object: "invoice";
  account: string;
  month: string;
  total_tokens: number;
  total_usd: string; // amounts are decimals in strings: exact to the micro-dollar
  total_micro_usd: number;
  tokens_by_tier: Record<string, number>;
  lines: {
    model: string;
    prompt_tokens: number;
    completion_tokens: number;
    list_usd: string;
    discount_usd: string;
    amount_usd: string;
  }[];
}

export interface Account {
  object: "account";
  account: string;
  tier: string;
  billing_status: string;
  key: { id: number; name: string; prefix: string; expires_at: string | null };
  limits: { requests_per_minute: number; tokens_per_minute: number };
  remaining: { requests_this_minute: number; tokens_this_minute: number };
  prices_per_million_tokens: Record<string, { input: string; output: string }>;
}
