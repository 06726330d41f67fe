/** JSON payloads (Content-Format 50). */
import { TextDecoder } from 'node:util';
import { PayloadError } from './errors';

// fatal: invalid UTF-8 is an error rather than U+FFFD; a leading BOM is dropped.
const utf8 = new TextDecoder('utf-8', { fatal: true });

export function encodeJson(value: unknown): Buffer {
  // JSON.stringify returns undefined for undefined, functions and symbols; encodeCbor writes null.
  return Buffer.from(JSON.stringify(value) ?? 'null');
}

export function decodeJson(buf: Buffer): unknown {
  let text: string;
  try {
    text = utf8.decode(buf);
  } catch (error) {
    throw new PayloadError('invalid JSON payload: not valid UTF-8', { cause: error });
  }
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new PayloadError(`invalid JSON payload: ${(error as Error).message}`, { cause: error });
  }
}
