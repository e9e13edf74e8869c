// When to try a request again and how long to wait: 429 and 5xx (and lost connections) are
// retried with exponential backoff and jitter, or after the server's Retry-After.

export const RETRY_STATUSES = new Set([429, 500, 502, 503, 504]);
const MAX_DELAY_MS = 60_000;

/** Milliseconds from a Retry-After header (delta-seconds or an HTTP date); undefined without one. */
export function retryAfterMs(headers: Record<string, string> | Headers | undefined): number | undefined {
  const value = headers instanceof Headers ? headers.get("retry-after") : headers?.["retry-after"];
  if (!value || !value.trim()) return undefined;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return Math.max(0, seconds * 1000);
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : Math.max(0, date - Date.now());
}

/** Delay before retry number `attempt` (0-based), in milliseconds. */
export function backoffMs(attempt: number, headers?: Record<string, string> | Headers, baseMs = 500): number {
  const told = retryAfterMs(headers);
  if (told !== undefined) return Math.min(told, MAX_DELAY_MS);
  return Math.min(baseMs * 2 ** attempt, MAX_DELAY_MS) * (0.5 + Math.random() / 2);
}

/** Waits `ms`, or rejects with the signal's reason as soon as it aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
