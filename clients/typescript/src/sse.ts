// Server-sent events: the `data` of each event of a response body, as text.

type Read = ReadableStreamReadResult<Uint8Array>;

/** Yields each event's data (its `data:` lines joined by "\n"); each read goes through `wait`
 * (the caller's timeout). */
export async function* sseData(
  body: ReadableStream<Uint8Array>,
  wait: (read: Promise<Read>) => Promise<Read>,
): AsyncGenerator<string> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let data: string[] = [];
  // An event ends at a blank line; comments (": keep-alive") and other fields are skipped.
  function* take(line: string): Generator<string> {
    if (line.endsWith("\r")) line = line.slice(0, -1);
    if (line === "") {
      if (data.length) yield data.join("\n");
      data = [];
    } else if (line.startsWith("data:")) {
      data.push(line.slice(line.startsWith("data: ") ? 6 : 5));
    }
  }
  try {
    for (;;) {
      const { done, value } = await wait(reader.read());
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      const lines = buffer.split("\n");
      buffer = lines.pop()!;
      for (const line of lines) yield* take(line);
    }
    yield* take(buffer + decoder.decode());
    yield* take(""); // a last event without its blank line
  } finally {
    // Stopped early (break, abort, error): cancelling the body closes the connection, so the
    // server stops generating.
    await reader.cancel().catch(() => {});
  }
}
