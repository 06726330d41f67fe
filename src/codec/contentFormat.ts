/** Picks the body codec from a CoAP Content-Format (request) or Accept (response) option. */
import { decodeCbor, encodeCbor } from './cbor';
import { UnsupportedFormatError } from './errors';
import { decodeJson, encodeJson } from './json';

/** CoAP Content-Format numbers (RFC 7252 section 12.3, RFC 8949 section 9.5). */
export const CONTENT_FORMAT = { TEXT_PLAIN: 0, LINK_FORMAT: 40, JSON: 50, CBOR: 60 } as const;

export type BodyFormat = typeof CONTENT_FORMAT.JSON | typeof CONTENT_FORMAT.CBOR;

/** Whether a Kuzzle request or response body can be carried in this format. */
export function isBodyFormat(format: number): format is BodyFormat {
  return format === CONTENT_FORMAT.JSON || format === CONTENT_FORMAT.CBOR;
}

/** An empty payload is a request without body: undefined. Throws PayloadError on a bad payload. */
export function decodePayload(format: number, buf: Buffer): unknown {
  if (!isBodyFormat(format)) throw new UnsupportedFormatError(format);
  if (buf.length === 0) return undefined;
  return format === CONTENT_FORMAT.CBOR ? decodeCbor(buf) : decodeJson(buf);
}

/** undefined (no body) gives an empty payload, the counterpart of decodePayload. */
export function encodePayload(format: number, value: unknown): Buffer {
  if (!isBodyFormat(format)) throw new UnsupportedFormatError(format);
  if (value === undefined) return Buffer.alloc(0);
  return format === CONTENT_FORMAT.CBOR ? encodeCbor(value) : encodeJson(value);
}
