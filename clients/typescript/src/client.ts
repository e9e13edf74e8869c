// The client: `client.chat.complete`, `client.chat.stream`, `client.models`, `client.usage`,
// `client.account`, `client.completions`, `client.embeddings`.
import { APIConnectionError, APIError, APITimeoutError, statusError } from "./errors.js";
import { RETRY_STATUSES, backoffMs, sleep } from "./retry.js";
import { sseData } from "./sse.js";
import {
  type Account,
  type ChatCompletion,
  type ChatRequest,
  ChatResponse,
  type Invoice,
  type ModelCard,
  type StreamEvent,
  type UsageReport,
  streamEvents,
} from "./types.js";

export const DEFAULT_BASE_URL = "http://127.0.0.1:8000";
const VERSION = "0.1.0";

export interface ClientOptions {
  /** Default: $MAGISTRAL_API_KEY. */
  apiKey?: string;
  /** The server, without `/v1` (default: $MAGISTRAL_BASE_URL, else http://127.0.0.1:8000). */
  baseURL?: string;
  /** Retries after a 429, a 5xx, a lost connection or a timeout (default 2). */
  maxRetries?: number;
  /** How long to wait for an answer, or in a stream for the next bytes (default 600 000). */
  timeoutMs?: number;
}

export interface RequestOptions {
  /** Aborting it rejects the call (or ends the stream) with the signal's reason and closes the connection. */
  signal?: AbortSignal;
}

/** Aborts `signal` when the caller's signal aborts, or when one wait (`within`) lasts over `ms`:
 * a stream may run for long, but each read of it must make progress. */
class Deadline {
  private readonly controller = new AbortController();
  private readonly onAbort = () => this.controller.abort(this.caller!.reason);
  private timer?: ReturnType<typeof setTimeout>;
  private timedOut = false;
  readonly signal = this.controller.signal;

  constructor(private readonly ms: number, private readonly caller?: AbortSignal) {
    caller?.addEventListener("abort", this.onAbort, { once: true });
    if (caller?.aborted) this.onAbort();
  }

  async within<T>(wait: Promise<T>): Promise<T> {
    this.timer = setTimeout(() => {
      this.timedOut = true;
      this.controller.abort(new APITimeoutError());
    }, this.ms);
    try {
      return await wait;
    } finally {
      clearTimeout(this.timer);
    }
  }

  clear(): void {
    clearTimeout(this.timer);
    this.caller?.removeEventListener("abort", this.onAbort);
  }

  /** What a failed fetch or read means: the caller's abort, a timeout, a lost connection
   * (fetch reports those as TypeError), or an error of our own, thrown as it is. */
  failure(err: unknown): unknown {
    if (this.caller?.aborted) return this.caller.reason;
    if (this.timedOut) return new APITimeoutError();
    if (!(err instanceof TypeError)) return err;
    const cause = (err.cause as Error | undefined)?.message;
    return new APIConnectionError(`Connection error: ${cause ?? err.message}`, { cause: err });
  }
}

function parseBody(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

export class Magistral {
  readonly baseURL: string;
  readonly maxRetries: number;
  readonly timeoutMs: number;
  readonly chat = new Chat(this);
  readonly models = new Models(this);
  readonly usage = new UsageReads(this);
  readonly account = new AccountReads(this);
  readonly completions = new Completions(this);
  readonly embeddings = new Embeddings(this);
  readonly #apiKey: string;

  constructor(options: ClientOptions = {}) {
    this.baseURL = (options.baseURL ?? process.env.MAGISTRAL_BASE_URL ?? DEFAULT_BASE_URL).replace(/\/+$/, "");
    this.#apiKey = options.apiKey ?? process.env.MAGISTRAL_API_KEY ?? "";
    this.maxRetries = options.maxRetries ?? 2;
    this.timeoutMs = options.timeoutMs ?? 600_000;
  }

  /** Low level: one request, retried on 429/5xx, lost connections and timeouts. A JSON answer
   * is read within the retries; a stream's response is returned open, with its deadline for the reads. */
  async request(
    method: string,
    path: string,
    init: { body?: unknown; signal?: AbortSignal; stream?: boolean } = {},
  ): Promise<{ data: unknown; response: Response; deadline: Deadline }> {
    const headers: Record<string, string> = {
      Authorization: `Bearer ${this.#apiKey}`,
      Accept: init.stream ? "text/event-stream" : "application/json",
      "User-Agent": `magistral-ts/${VERSION}`,
    };
    if (init.body !== undefined) headers["Content-Type"] = "application/json";
    const body = init.body === undefined ? undefined : JSON.stringify(init.body);
    for (let attempt = 0; ; attempt++) {
      const last = attempt >= this.maxRetries;
      const deadline = new Deadline(this.timeoutMs, init.signal);
      let response: Response;
      let text = "";
      try {
        response = await deadline.within(fetch(this.baseURL + path, { method, headers, body, signal: deadline.signal }));
        if (!init.stream || response.status >= 400) text = await deadline.within(response.text());
      } catch (err) {
        deadline.clear();
        const failure = deadline.failure(err);
        if (last || !(failure instanceof APIConnectionError)) throw failure;
        await sleep(backoffMs(attempt), init.signal);
        continue;
      }
      if (response.status < 400) {
        if (init.stream) return { data: undefined, response, deadline };
        deadline.clear();
        const data = parseBody(text);
        if (typeof data !== "object") throw new APIError(`Expected JSON from ${path}, got: ${text.slice(0, 200)}`);
        return { data, response, deadline };
      }
      deadline.clear();
      const error = statusError(response.status, parseBody(text), Object.fromEntries(response.headers));
      if (last || !RETRY_STATUSES.has(response.status)) throw error;
      await sleep(backoffMs(attempt, error.headers), init.signal);
    }
  }

  async get<T>(path: string, options: RequestOptions = {}): Promise<T> {
    return (await this.request("GET", path, { signal: options.signal })).data as T;
  }

  async post<T>(path: string, body: unknown, options: RequestOptions = {}): Promise<T> {
    return (await this.request("POST", path, { body, signal: options.signal })).data as T;
  }
}

function query(params: Record<string, string | undefined>): string {
  const defined = Object.entries(params).filter((entry): entry is [string, string] => entry[1] !== undefined);
  return defined.length ? `?${new URLSearchParams(defined)}` : "";
}

function day(value: string | Date | undefined): string | undefined {
  return value instanceof Date ? value.toISOString().slice(0, 10) : value;
}

export class Chat {
  constructor(private readonly client: Magistral) {}

  async complete(request: ChatRequest, options: RequestOptions = {}): Promise<ChatResponse> {
    const body = { ...request, stream: undefined }; // JSON.stringify drops it
    return new ChatResponse(await this.client.post<ChatCompletion>("/v1/chat/completions", body, options));
  }

  /** Events as they arrive: thinking, text, tool calls, then one `end` event with the finish
   * reason and usage. Retried only before the first event. Leaving the loop early (break, or
   * an aborted signal) closes the connection. */
  async *stream(request: ChatRequest, options: RequestOptions = {}): AsyncGenerator<StreamEvent> {
    const { response, deadline } = await this.client.request("POST", "/v1/chat/completions", {
      body: { ...request, stream: true },
      signal: options.signal,
      stream: true,
    });
    try {
      for await (const data of sseData(response.body!, (read) => deadline.within(read))) {
        if (data === "[DONE]") return;
        yield* streamEvents(JSON.parse(data));
      }
    } catch (err) {
      throw deadline.failure(err);
    } finally {
      deadline.clear();
    }
  }
}

export class Models {
  constructor(private readonly client: Magistral) {}

  async list(options?: RequestOptions): Promise<ModelCard[]> {
    return (await this.client.get<{ data: ModelCard[] }>("/v1/models", options)).data;
  }

  /** A model by id or alias (the card carries its canonical id). */
  retrieve(model: string, options?: RequestOptions): Promise<ModelCard> {
    return this.client.get<ModelCard>(`/v1/models/${encodeURIComponent(model)}`, options);
  }
}

export interface UsageQuery {
  /** First UTC day, YYYY-MM-DD or a Date (default: the first of this month). */
  start?: string | Date;
  /** Last UTC day, inclusive (default: today). */
  end?: string | Date;
  groupBy?: "day" | "key" | "model";
}

/** The calling account's usage and invoices. */
export class UsageReads {
  constructor(private readonly client: Magistral) {}

  /** Tokens, requests and list-price cost per day, key or model. */
  report(params: UsageQuery = {}, options?: RequestOptions): Promise<UsageReport> {
    const q = query({ start: day(params.start), end: day(params.end), group_by: params.groupBy });
    return this.client.get<UsageReport>(`/v1/usage${q}`, options);
  }

  /** The invoice of a calendar month, YYYY-MM or a Date (default: this month, so far). */
  invoice(params: { month?: string | Date } = {}, options?: RequestOptions): Promise<Invoice> {
    return this.client.get<Invoice>(`/v1/usage/invoice${query({ month: day(params.month)?.slice(0, 7) })}`, options);
  }
}

export class AccountReads {
  constructor(private readonly client: Magistral) {}

  /** The calling key, its account, its limits and what remains of them this minute. */
  retrieve(options?: RequestOptions): Promise<Account> {
    return this.client.get<Account>("/v1/account", options);
  }
}

export class Completions {
  constructor(private readonly client: Magistral) {}

  /** Legacy text completion (`/v1/completions`): the response as JSON, logprobs included. */
  create(request: { model: string; prompt: string | string[] | number[] | number[][]; [field: string]: unknown },
    options?: RequestOptions): Promise<Record<string, unknown>> {
    return this.client.post("/v1/completions", request, options);
  }
}

export class Embeddings {
  constructor(private readonly client: Magistral) {}

  /** One vector per input, in input order. */
  async create(request: { model: string; input: string | string[]; [field: string]: unknown },
    options?: RequestOptions): Promise<number[][]> {
    const { data } = await this.client.post<{ data: { index: number; embedding: number[] }[] }>(
      "/v1/embeddings", request, options);
    return [...data].sort((a, b) => a.index - b.index).map((row) => row.embedding);
  }
}
