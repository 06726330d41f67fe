/**
 * CBOR encoder for responses and notifications sent to devices.
 *
 * It writes RFC 8949 preferred serialization, the form small decoders (TinyCBOR, zcbor, cn-cbor)
 * handle: shortest heads, definite lengths, no tags. Integral numbers stay integers up to 64 bits
 * (cbor-x writes those beyond 32 bits as float64, which breaks Kuzzle's millisecond timestamps on
 * a device asking for an integer). Values are mapped the way JSON.stringify maps them, so a device
 * sees the same data over CBOR as over JSON.
 *
 * It runs for every response, so it writes into one module-level buffer that grows as needed and
 * only copies the written bytes out at the end.
 */
import { MAX_NESTING } from './limits';

const INITIAL_SIZE = 8192;
// A buffer grown by one huge response is dropped afterwards rather than kept for the process life.
const MAX_RETAINED = 256 * 1024;
const TWO_32 = 0x100000000;
const TWO_64 = 18446744073709551616;
const BIG_TWO_64 = 1n << 64n;

const MAJOR_NEGATIVE = 0x20;
const MAJOR_BYTES = 0x40;
const MAJOR_TEXT = 0x60;
const MAJOR_ARRAY = 0x80;
const MAJOR_MAP = 0xa0;

let buf = Buffer.allocUnsafeSlow(INITIAL_SIZE);
let pos = 0;

// Views used to test whether a number fits a float32, and to read its bits.
const f32 = new Float32Array(1);
const f32Bits = new Uint32Array(f32.buffer);

export function encodeCbor(value: unknown): Buffer {
  // A toJSON() may itself call encodeCbor: the nested call writes after the outer bytes.
  const start = pos;
  try {
    writeValue(value, 0);
    const out = Buffer.allocUnsafe(pos - start);
    buf.copy(out, 0, start, pos);
    return out;
  } finally {
    pos = start;
    if (start === 0 && buf.length > MAX_RETAINED) buf = Buffer.allocUnsafeSlow(INITIAL_SIZE);
  }
}

function ensure(size: number): void {
  if (pos + size > buf.length) {
    const grown = Buffer.allocUnsafeSlow(Math.max(buf.length * 2, pos + size));
    buf.copy(grown, 0, 0, pos);
    buf = grown;
  }
}

function writeValue(value: unknown, depth: number): void {
  switch (typeof value) {
    case 'string':
      writeString(value);
      return;
    case 'number':
      writeNumber(value);
      return;
    case 'boolean':
      ensure(1);
      buf[pos++] = value ? 0xf5 : 0xf4;
      return;
    case 'bigint':
      writeBigInt(value);
      return;
    case 'object':
      if (value === null) break;
      if (depth >= MAX_NESTING) {
        throw new RangeError(`cannot encode CBOR: nesting deeper than ${MAX_NESTING} levels (cyclic value?)`);
      }
      if (Array.isArray(value)) writeArray(value, depth + 1);
      // Checked before toJSON: Buffer has a toJSON() that would turn it into {type, data}.
      else if (value instanceof Uint8Array) writeBytes(value);
      else if (typeof (value as { toJSON?: unknown }).toJSON === 'function') {
        writeValue((value as { toJSON(): unknown }).toJSON(), depth + 1);
      } else writeMap(value as Record<string, unknown>, depth + 1);
      return;
  }
  // null, and undefined/function/symbol where JSON would write null (arrays, top level).
  ensure(1);
  buf[pos++] = 0xf6;
}

/** Writes a head whose argument is an integer in [0, 2^64); the caller has ensured 9 bytes. */
function putHead(major: number, n: number): void {
  if (n < 24) {
    buf[pos++] = major | n;
  } else if (n < 0x100) {
    buf[pos++] = major | 24;
    buf[pos++] = n;
  } else if (n < 0x10000) {
    buf[pos++] = major | 25;
    buf[pos++] = n >>> 8;
    buf[pos++] = n;
  } else if (n < TWO_32) {
    buf[pos++] = major | 26;
    putUint32(n);
  } else {
    buf[pos++] = major | 27;
    // Exact even above 2^53: dividing by a power of two and the remainder lose nothing.
    putUint32(Math.floor(n / TWO_32));
    putUint32(n % TWO_32);
  }
}

function putUint32(n: number): void {
  buf[pos++] = n >>> 24;
  buf[pos++] = n >>> 16;
  buf[pos++] = n >>> 8;
  buf[pos++] = n;
}

function headSize(n: number): number {
  return n < 24 ? 1 : n < 0x100 ? 2 : n < 0x10000 ? 3 : n < TWO_32 ? 5 : 9;
}

function writeNumber(n: number): void {
  ensure(9);
  if (Number.isInteger(n)) {
    if (n > 0 || (n === 0 && 1 / n > 0)) {
      if (n < TWO_64) return putHead(0, n);
    } else if (n < 0 && n >= -TWO_64) {
      return putNegative(n);
    }
  }
  putFloat(n);
}

/** Major type 1 carries -1 - n, which is not exact as a double below -2^53: subtract on 32-bit halves. */
function putNegative(n: number): void {
  if (n >= -TWO_32) return putHead(MAJOR_NEGATIVE, -1 - n);
  let high = Math.floor(-n / TWO_32);
  let low = -n % TWO_32;
  if (low === 0) {
    high -= 1;
    low = TWO_32 - 1;
  } else {
    low -= 1;
  }
  buf[pos++] = MAJOR_NEGATIVE | 27;
  putUint32(high);
  putUint32(low);
}

/** Shortest of float16/32/64 that holds the value exactly (preferred serialization). */
function putFloat(n: number): void {
  f32[0] = n;
  if (f32[0] === n) {
    const bits = f32Bits[0];
    const half = toHalf(bits);
    if (half >= 0) {
      buf[pos++] = 0xf9;
      buf[pos++] = half >>> 8;
      buf[pos++] = half;
    } else {
      buf[pos++] = 0xfa;
      putUint32(bits);
    }
  } else if (n !== n) {
    // NaN: the canonical quiet NaN, as RFC 8949 recommends.
    buf[pos++] = 0xf9;
    buf[pos++] = 0x7e;
    buf[pos++] = 0x00;
  } else {
    buf[pos++] = 0xfb;
    pos = buf.writeDoubleBE(n, pos);
  }
}

/** float16 bits of a float32 (given by its bits) when exactly representable, else -1. */
function toHalf(bits: number): number {
  const sign = (bits >>> 16) & 0x8000;
  const exponent = (bits >>> 23) & 0xff;
  const mantissa = bits & 0x7fffff;
  if (exponent === 0xff) return mantissa === 0 ? sign | 0x7c00 : -1; // infinities
  if (exponent === 0) return mantissa === 0 ? sign : -1; // zeros; float32 subnormals are too small
  if (exponent >= 113 && exponent <= 142) {
    // float16 normal range 2^-14..2^15: the 13 mantissa bits float16 lacks must be zero.
    return (mantissa & 0x1fff) === 0 ? sign | ((exponent - 112) << 10) | (mantissa >>> 13) : -1;
  }
  if (exponent >= 103 && exponent < 113) {
    // float16 subnormal k * 2^-24 (k < 1024): the significand must have no bits below 2^-24.
    const significand = mantissa | 0x800000;
    const shift = 126 - exponent;
    return (significand & ((1 << shift) - 1)) === 0 ? sign | (significand >>> shift) : -1;
  }
  return -1;
}

function writeBigInt(n: bigint): void {
  // JSON.stringify rejects every BigInt; CBOR can carry those that fit its 64-bit integers.
  const negative = n < 0n;
  const argument = negative ? -1n - n : n;
  if (argument >= BIG_TWO_64) {
    throw new RangeError(`cannot encode CBOR: BigInt ${n} is outside the 64-bit integer range`);
  }
  ensure(9);
  const major = negative ? MAJOR_NEGATIVE : 0;
  if (argument < 0x100000000n) {
    putHead(major, Number(argument));
  } else {
    buf[pos++] = major | 27;
    pos = buf.writeBigUInt64BE(argument, pos);
  }
}

function writeString(s: string): void {
  const length = s.length;
  // Short ASCII strings (keys, enum values) are copied in JS, cheaper than a native call.
  if (length < 24) {
    ensure(1 + length);
    let p = pos + 1;
    for (let i = 0; i < length; i++) {
      const code = s.charCodeAt(i);
      if (code >= 0x80) return writeUtf8(s);
      buf[p++] = code;
    }
    buf[pos] = MAJOR_TEXT | length;
    pos = p;
    return;
  }
  writeUtf8(s);
}

/**
 * The byte length is only known after encoding: reserve the head for the worst case
 * (3 bytes per UTF-16 unit), then move the bytes back if the real head is shorter.
 */
function writeUtf8(s: string): void {
  const reserved = headSize(s.length * 3);
  ensure(reserved + s.length * 3);
  const length = buf.write(s, pos + reserved);
  const actual = headSize(length);
  if (actual < reserved) buf.copyWithin(pos + actual, pos + reserved, pos + reserved + length);
  putHead(MAJOR_TEXT, length);
  pos += length;
}

function writeBytes(bytes: Uint8Array): void {
  ensure(9 + bytes.length);
  putHead(MAJOR_BYTES, bytes.length);
  buf.set(bytes, pos);
  pos += bytes.length;
}

function writeArray(array: unknown[], depth: number): void {
  ensure(9);
  putHead(MAJOR_ARRAY, array.length);
  for (let i = 0; i < array.length; i++) writeValue(array[i], depth);
}

function writeMap(map: Record<string, unknown>, depth: number): void {
  // Entries JSON skips are not known in advance: write a 1-byte head, widen it if needed.
  ensure(1);
  const head = pos++;
  let count = 0;
  for (const key in map) {
    if (!Object.prototype.hasOwnProperty.call(map, key)) continue;
    const value = map[key];
    if (value === undefined || typeof value === 'function' || typeof value === 'symbol') continue;
    writeString(key);
    writeValue(value, depth);
    count++;
  }
  if (count < 24) {
    buf[head] = MAJOR_MAP | count;
    return;
  }
  const size = headSize(count);
  ensure(size - 1);
  buf.copyWithin(head + size, head + 1, pos);
  const end = pos + size - 1;
  pos = head;
  putHead(MAJOR_MAP, count);
  pos = end;
}
