// Errors of the SDK: each carries what the server said.

/** Base of every error the client throws (an aborted call rejects with the signal's reason). */
export class APIError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** The server could not be reached, or the connection was lost (after the retries). */
export class APIConnectionError extends APIError {}

/** No answer (or, in a stream, no new bytes) within `timeoutMs` (after the retries). */
export class APITimeoutError extends APIConnectionError {
  constructor(message = "Request timed out") {
    super(message);
  }
}

/** The server answered with an error status; `body` is its (Mistral-style) error object. */
export class APIStatusError extends APIError {
  readonly status: number;
  readonly body: unknown;
  /** Response headers, names in lower case (e.g. `retry-after`). */
  readonly headers: Record<string, string>;

  constructor(status: number, body: unknown, headers: Record<string, string> = {}) {
    super(errorMessage(body) || `HTTP ${status}`);
    this.status = status;
    this.body = body;
    this.headers = headers;
  }
}

export class BadRequestError extends APIStatusError {} // 400
export class AuthenticationError extends APIStatusError {} // 401: missing or wrong key
export class PermissionDeniedError extends APIStatusError {} // 403: e.g. billing not in good standing
export class NotFoundError extends APIStatusError {} // 404: unknown model or route
export class UnprocessableEntityError extends APIStatusError {} // 422: the request failed validation
export class RateLimitError extends APIStatusError {} // 429: the key is over its requests or tokens per minute
export class InternalServerError extends APIStatusError {} // 5xx

// Mistral's body has `message`; OpenAI-style bodies only `error.message`; anything else is shown as it is.
function errorMessage(body: unknown): string {
  if (typeof body === "string") return body;
  if (body && typeof body === "object") {
    const object = body as { message?: unknown; error?: { message?: unknown } };
    const message = object.message ?? object.error?.message;
    if (typeof message === "string") return message;
    if (message != null) return JSON.stringify(message);
  }
  return "";
}

const BY_STATUS: Record<number, typeof APIStatusError> = {
  400: BadRequestError,
  401: AuthenticationError,
  403: PermissionDeniedError,
  404: NotFoundError,
  422: UnprocessableEntityError,
  429: RateLimitError,
};

export function statusError(status: number, body: unknown, headers: Record<string, string>): APIStatusError {
  const Class = BY_STATUS[status] ?? (status >= 500 ? InternalServerError : APIStatusError);
  return new Class(status, body, headers);
}
