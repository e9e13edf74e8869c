// What the test files share: settings from the environment (tests/sdk/test_typescript_sdk.py sets them).
export function env(name) {
  const value = process.env[name];
  if (!value) throw new Error(`set ${name} (tests/sdk/test_typescript_sdk.py does)`);
  return value;
}

export async function collect(events) {
  const out = [];
  for await (const event of events) out.push(event);
  return out;
}

export function joined(events, type) {
  return events.filter((e) => e.type === type).map((e) => e.text).join("");
}

// The server's /health: how many sequences it is generating or has queued.
export async function busy(baseURL) {
  const health = await (await fetch(`${baseURL}/health`)).json();
  return health.active_sequences + health.queued_sequences;
}

export async function waitIdle(baseURL, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  while ((await busy(baseURL)) > 0) {
    if (Date.now() > deadline) throw new Error(`server still busy after ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
