// Images to content chunks: a file path, a file: URL, bytes (Buffer / Uint8Array) or an http(s) URL.
import { readFileSync } from "node:fs";
import { extname } from "node:path";
import { fileURLToPath } from "node:url";
import type { ImageURLChunk, Message } from "./types.js";

export type ImageInput = string | URL | Uint8Array;

const BY_EXTENSION: Record<string, string> = {
  ".png": "image/png",
  ".jpg": "image/jpeg",
  ".jpeg": "image/jpeg",
  ".gif": "image/gif",
  ".webp": "image/webp",
};

function sniff(data: Uint8Array): string {
  const starts = (bytes: number[], at = 0) => bytes.every((b, i) => data[at + i] === b);
  if (starts([0x89, 0x50, 0x4e, 0x47])) return "image/png";
  if (starts([0xff, 0xd8, 0xff])) return "image/jpeg";
  if (starts([0x47, 0x49, 0x46, 0x38])) return "image/gif";
  if (starts([0x52, 0x49, 0x46, 0x46]) && starts([0x57, 0x45, 0x42, 0x50], 8)) return "image/webp";
  return "application/octet-stream"; // the server names what it cannot decode
}

function dataURL(data: Uint8Array, mime: string): string {
  return `data:${mime};base64,${Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString("base64")}`;
}

function fromFile(path: string): string {
  const data = readFileSync(path);
  return dataURL(data, BY_EXTENSION[extname(path).toLowerCase()] ?? sniff(data));
}

/** An `image_url` value: http(s) and data: URLs pass through (the server fetches http(s) ones);
 * paths, file: URLs and bytes become base64 data URLs, since the server refuses file://. */
export function imageURL(image: ImageInput): string {
  if (image instanceof URL) {
    return image.protocol === "file:" ? fromFile(fileURLToPath(image)) : image.href;
  }
  if (typeof image === "string") {
    if (/^(https?:|data:)/i.test(image)) return image;
    return fromFile(image.startsWith("file:") ? fileURLToPath(image) : image);
  }
  if (image instanceof Uint8Array) return dataURL(image, sniff(image));
  throw new TypeError(`cannot make an image of ${Object.prototype.toString.call(image)}`);
}

export function imageChunk(image: ImageInput): ImageURLChunk {
  return { type: "image_url", image_url: imageURL(image) };
}

/** A user message with text and images, in Mistral's content-chunk form. */
export function userMessage(text: string, ...images: ImageInput[]): Message {
  if (images.length === 0) return { role: "user", content: text };
  return { role: "user", content: [{ type: "text", text }, ...images.map(imageChunk)] };
}
