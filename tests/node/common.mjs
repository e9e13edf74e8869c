// What both Node client scripts share: the server from the environment, the tool and the schema
// they send, and the report they print for tests/api/test_agent_clients.py to check.
import { readFileSync } from "node:fs";

export const BASE_URL = process.env.MAGISTRAL_BASE_URL;
export const API_KEY = process.env.MAGISTRAL_API_KEY;
export const MODEL = process.env.MAGISTRAL_MODEL;
if (!BASE_URL || !API_KEY || !MODEL) {
  throw new Error("set MAGISTRAL_BASE_URL, MAGISTRAL_API_KEY and MAGISTRAL_MODEL");
}

// The schemas the scripts send (tests/api/test_agent_clients.py validates against the same file);
// maxLength and additionalProperties: false keep the 135M model's constrained answers short.
const schemas = JSON.parse(readFileSync(new URL("./schemas.json", import.meta.url), "utf8"));
export const WEATHER_PARAMETERS = schemas.weather_parameters;
export const CITY_SCHEMA = schemas.city;

export const ASK_WEATHER = "What is the weather in Paris?";
export const ASK_CITY = "Describe Paris: its name, country and population.";
export const UNKNOWN_MODEL = "no-such-model";

export function weather(args) {
  return `18 degrees ${args.unit} and sunny in ${args.city}`;
}

// Runs each named step, records its result or its error, and prints one JSON report.
export async function report(steps) {
  const out = {};
  for (const [name, step] of Object.entries(steps)) {
    try {
      out[name] = await step();
    } catch (err) {
      out[name] = { failed: `${err?.name}: ${err?.message}`, stack: err?.stack };
    }
  }
  process.stdout.write(JSON.stringify(out));
}
