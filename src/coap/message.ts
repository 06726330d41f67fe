/**
 * The CoAP message as this server sees it, and its wire form.
 *
 * Parsing is coap-packet's (RFC 7252 framing and RFC 8974 extended tokens),
 * turned into numbers once so that the rest of the stack never compares option
 * names or "c.dd" strings. Encoding is our own single-buffer writer: responses
 * are the hot path, and coap-packet's generate() allocates per option and sorts
 * by name (measured about 9x slower than writing the header by hand).
 */
import { createHash } from 'node:crypto';
import { parse as parsePacket } from 'coap-packet';
import { Option, type MessageType } from './constants';

export interface CoapOption {
  readonly number: number;
  readonly value: Buffer;
}

export interface CoapMessage {
  readonly type: MessageType;
  /** Wire byte: class << 5 | detail. */
  readonly code: number;
  readonly messageId: number;
  readonly token: Buffer;
  /** In ascending option-number order, as on the wire. */
  readonly options: readonly CoapOption[];
  readonly payload: Buffer;
}

// coap-packet names the options it knows and gives the number, as a string, for the others.
const NUMBER_OF_NAME: Readonly<Record<string, number>> = {
  'If-Match': 1, 'Uri-Host': 3, ETag: 4, 'If-None-Match': 5, Observe: 6, 'Uri-Port': 7,
  'Location-Path': 8, OSCORE: 9, 'Uri-Path': 11, 'Content-Format': 12, 'Max-Age': 14,
  'Uri-Query': 15, 'Hop-Limit': 16, Accept: 17, 'Q-Block1': 19, 'Location-Query': 20,
  Block2: 23, Block1: 27, Size2: 28, 'Q-Block2': 31, 'Proxy-Uri': 35, 'Proxy-Scheme': 39,
  Size1: 60, 'No-Response': 258, 'OCF-Accept-Content-Format-Version': 2049,
  'OCF-Content-Format-Version': 2053,
};

/**
 * Checks the framing coap-packet does not (it clamps out-of-range slices
 * silently): the token and every option fit in the datagram, and a payload
 * marker is followed by a payload (RFC 7252 §3: a message format error).
 */
function checkFraming(datagram: Buffer): void {
  const end = datagram.length;
  if (end < 4) throw new Error('shorter than a CoAP header');
  const tkl = datagram[0] & 0x0f;
  let pos = 4 + (tkl === 13 ? 1 : tkl === 14 ? 2 : 0);
  if (pos > end) throw new Error('truncated token length');
  pos += tkl < 13 ? tkl : tkl === 13 ? datagram[4] + 13 : tkl === 14 ? datagram.readUInt16BE(4) + 269 : 0;
  if (pos > end) throw new Error('token longer than the datagram');
  while (pos < end) {
    const byte = datagram[pos++];
    if (byte === 0xff) {
      if (pos === end) throw new Error('payload marker without payload');
      return;
    }
    const deltaNibble = byte >> 4;
    const lengthNibble = byte & 0x0f;
    if (deltaNibble === 15 || lengthNibble === 15) throw new Error('reserved option nibble 15');
    pos += extendedBytes(deltaNibble);
    if (pos > end) throw new Error('truncated option header');
    const lengthAt = pos;
    pos += extendedBytes(lengthNibble);
    if (pos > end) throw new Error('truncated option header');
    const length = lengthNibble < 13 ? lengthNibble : lengthNibble === 13 ? datagram[lengthAt] + 13 : datagram.readUInt16BE(lengthAt) + 269;
    pos += length;
    if (pos > end) throw new Error('option value longer than the datagram');
  }
}

function extendedBytes(nibbleValue: number): number {
  return nibbleValue === 13 ? 1 : nibbleValue === 14 ? 2 : 0;
}

/** Decodes one datagram; throws on anything that is not a well-formed CoAP message. */
export function decodeMessage(datagram: Buffer): CoapMessage {
  checkFraming(datagram);
  const packet = parsePacket(datagram);
  const options: CoapOption[] = new Array(packet.options.length);
  for (let i = 0; i < packet.options.length; i++) {
    const { name, value } = packet.options[i];
    const number = NUMBER_OF_NAME[name] ?? Number(name);
    if (!Number.isInteger(number)) throw new Error(`unparsable option ${String(name)}`);
    options[i] = { number, value };
  }
  return {
    type: ((datagram[0] >> 4) & 3) as MessageType,
    code: datagram[1],
    messageId: packet.messageId,
    token: packet.token,
    options,
    payload: packet.payload,
  };
}

/** Writes a message in one allocation. `options` must be in ascending number order. */
export function encodeMessage(
  type: MessageType,
  code: number,
  messageId: number,
  token: Buffer,
  options: readonly CoapOption[],
  payload: Buffer | null,
): Buffer {
  const tkl = token.length;
  let length = 4 + tkl + extendedLength(tkl);
  let previous = 0;
  for (const option of options) {
    const delta = option.number - previous;
    if (delta < 0) throw new Error('options must be sorted by number');
    length += 1 + extendedLength(delta) + extendedLength(option.value.length) + option.value.length;
    previous = option.number;
  }
  if (payload !== null && payload.length > 0) length += 1 + payload.length;

  const out = Buffer.allocUnsafe(length);
  out[0] = 0x40 | (type << 4) | nibble(tkl);
  out[1] = code;
  out[2] = messageId >> 8;
  out[3] = messageId & 0xff;
  let pos = writeExtended(out, 4, tkl);
  pos += token.copy(out, pos);
  previous = 0;
  for (const option of options) {
    const delta = option.number - previous;
    const size = option.value.length;
    out[pos++] = (nibble(delta) << 4) | nibble(size);
    pos = writeExtended(out, pos, delta);
    pos = writeExtended(out, pos, size);
    pos += option.value.copy(out, pos);
    previous = option.number;
  }
  if (payload !== null && payload.length > 0) {
    out[pos++] = 0xff;
    payload.copy(out, pos);
  }
  return out;
}

// RFC 7252 §3.1 / RFC 8974: 0-12 inline, 13 → one extra byte, 14 → two.
function nibble(n: number): number {
  return n < 13 ? n : n < 269 ? 13 : 14;
}

function extendedLength(n: number): number {
  return n < 13 ? 0 : n < 269 ? 1 : 2;
}

function writeExtended(out: Buffer, pos: number, n: number): number {
  if (n < 13) return pos;
  if (n < 269) {
    out[pos] = n - 13;
    return pos + 1;
  }
  out.writeUInt16BE(n - 269, pos);
  return pos + 2;
}

/** Value of a uint option (RFC 7252 §3.2): big-endian, leading zeros dropped. */
export function readUint(value: Buffer): number {
  let n = 0;
  for (let i = 0; i < value.length; i++) n = n * 256 + value[i];
  return n;
}

const UINT_CACHE: Buffer[] = Array.from({ length: 256 }, (_, n) =>
  n === 0 ? Buffer.alloc(0) : Buffer.from([n]),
);

export function encodeUint(n: number): Buffer {
  if (n < 256) return UINT_CACHE[n];
  const bytes: number[] = [];
  while (n > 0) {
    bytes.unshift(n % 256);
    n = Math.floor(n / 256);
  }
  return Buffer.from(bytes);
}

/** First value of an option, or undefined. */
export function findOption(message: CoapMessage, number: number): Buffer | undefined {
  for (const option of message.options) {
    if (option.number === number) return option.value;
    if (option.number > number) return undefined;
  }
  return undefined;
}

/** Inserts or replaces an option, keeping ascending order (options lists are short). */
export function withOption(options: readonly CoapOption[], number: number, value: Buffer): CoapOption[] {
  const out: CoapOption[] = [];
  let placed = false;
  for (const option of options) {
    if (!placed && option.number >= number) {
      out.push({ number, value });
      placed = true;
      if (option.number === number) continue;
    }
    out.push(option);
  }
  if (!placed) out.push({ number, value });
  return out;
}

/** The common case, a Content-Format alone, without an allocation per answer. */
const CONTENT_FORMAT_ALONE = new Map<number, readonly CoapOption[]>();

export function withContentFormat(options: readonly CoapOption[], contentFormat: number | undefined): readonly CoapOption[] {
  if (contentFormat === undefined) return options;
  if (options.length > 0) return withOption(options, Option.CONTENT_FORMAT, encodeUint(contentFormat));
  let alone = CONTENT_FORMAT_ALONE.get(contentFormat);
  if (alone === undefined) {
    alone = Object.freeze([{ number: Option.CONTENT_FORMAT, value: encodeUint(contentFormat) }]);
    CONTENT_FORMAT_ALONE.set(contentFormat, alone);
  }
  return alone;
}

/** Names a request body in a few bytes ('' for none): stored answers are matched to the request they answer by it. */
export function payloadDigest(payload: Buffer): string {
  return payload.length === 0 ? '' : createHash('sha256').update(payload).digest('base64');
}
