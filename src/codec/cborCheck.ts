/**
 * Gate run on device CBOR before cbor-x decodes it.
 *
 * cbor-x turns tags and unassigned simple values into Tag, Date, Set, Map, typed arrays, BigInt,
 * Error/RegExp objects, shared references (cycles) or records, none of which survive Kuzzle's JSON
 * serialization, and it can only refuse these through process-wide extension hooks, which would
 * also change any other cbor-x user in the Kuzzle process. So this walk over the encoded bytes
 * (no allocation) lets through only the JSON data model plus byte strings, and checks
 * well-formedness, nesting depth and trailing bytes with a message a device developer can act on.
 */
import { isUtf8 } from 'node:buffer';
import { PayloadError } from './errors';
import { MAX_NESTING } from './limits';

// RFC 8949 section 3.4.6: marks the data as CBOR and means nothing else, so it is let through.
const TAG_SELF_DESCRIBED = 55799;
const BREAK = 0xff;

const MAJOR_UNSIGNED = 0;
const MAJOR_NEGATIVE = 1;
const MAJOR_BYTES = 2;
const MAJOR_TEXT = 3;
const MAJOR_ARRAY = 4;
const MAJOR_MAP = 5;
const MAJOR_TAG = 6;

/** Throws a PayloadError unless `bytes` holds exactly one CBOR item that decodes to plain data. */
export function checkCbor(bytes: Uint8Array): void {
  if (bytes.length === 0) fail('empty payload');
  const end = skipItem(bytes, 0, 0);
  if (end !== bytes.length) fail(`${bytes.length - end} trailing byte(s) after the first item`, end);
}

function fail(reason: string, offset?: number): never {
  throw new PayloadError(`invalid CBOR payload: ${reason}${offset === undefined ? '' : ` at byte ${offset}`}`);
}

/** Checks the item starting at `pos` and returns the offset just past it. */
function skipItem(bytes: Uint8Array, pos: number, depth: number): number {
  if (pos >= bytes.length) fail('truncated', pos);
  const start = pos;
  const initial = bytes[pos++];
  const major = initial >>> 5;
  const info = initial & 0x1f;

  if (info === 31) return skipIndefinite(bytes, pos, major, depth);
  if (info >= 28) fail(`reserved additional information ${info}`, start);

  const size = info < 24 ? 0 : 1 << (info - 24);
  if (pos + size > bytes.length) fail('truncated', start);
  let argument = info;
  let high = 0;
  if (size === 1) argument = bytes[pos];
  else if (size === 2) argument = (bytes[pos] << 8) | bytes[pos + 1];
  else if (size >= 4) {
    const low = readUint32(bytes, pos + size - 4);
    // Above 2^53 this is approximate, which only matters for the messages below.
    if (size === 8) high = readUint32(bytes, pos);
    argument = high * 0x100000000 + low;
  }
  pos += size;

  switch (major) {
    case MAJOR_UNSIGNED:
      // cbor-x would return a BigInt or round; JSON has neither, so only exact numbers pass.
      if (argument > Number.MAX_SAFE_INTEGER) fail('integer beyond 2^53 - 1', start);
      return pos;
    case MAJOR_NEGATIVE:
      if (argument > Number.MAX_SAFE_INTEGER - 1) fail('integer beyond -(2^53 - 1)', start);
      return pos;
    case MAJOR_BYTES:
      if (argument > bytes.length - pos) fail('truncated', start);
      return pos + argument;
    case MAJOR_TEXT:
      if (argument > bytes.length - pos) fail('truncated', start);
      if (!isAsciiOrUtf8(bytes, pos, pos + argument)) fail('text string is not valid UTF-8', start);
      return pos + argument;
    case MAJOR_ARRAY:
      checkDepth(depth, start);
      for (let i = 0; i < argument; i++) pos = skipItem(bytes, pos, depth + 1);
      return pos;
    case MAJOR_MAP:
      checkDepth(depth, start);
      for (let i = 0; i < argument; i++) pos = skipEntry(bytes, pos, depth + 1);
      return pos;
    case MAJOR_TAG:
      if (argument !== TAG_SELF_DESCRIBED) fail(`unsupported tag ${argument}`, start);
      checkDepth(depth, start);
      return skipItem(bytes, pos, depth + 1);
    default:
      // Major type 7: false, true, null, undefined and floats. Other simple values have no meaning here.
      if (info < 20 || info === 24) fail(`unsupported simple value ${argument}`, start);
      return pos;
  }
}

function skipIndefinite(bytes: Uint8Array, pos: number, major: number, depth: number): number {
  const start = pos - 1;
  if (major === MAJOR_ARRAY || major === MAJOR_MAP) {
    checkDepth(depth, start);
    for (;;) {
      if (pos >= bytes.length) fail('truncated (missing break)', start);
      if (bytes[pos] === BREAK) return pos + 1;
      pos = major === MAJOR_ARRAY ? skipItem(bytes, pos, depth + 1) : skipEntry(bytes, pos, depth + 1);
    }
  }
  if (major === MAJOR_BYTES || major === MAJOR_TEXT) fail('indefinite-length strings are not supported', start);
  if (major === 7) fail('unexpected break', start);
  fail(`indefinite length is not allowed for major type ${major}`, start);
}

/** A map key must become an object property name: cbor-x writes integers as their decimal string. */
function skipEntry(bytes: Uint8Array, pos: number, depth: number): number {
  if (pos >= bytes.length) fail('truncated', pos);
  const keyMajor = bytes[pos] >>> 5;
  if (keyMajor !== MAJOR_TEXT && keyMajor !== MAJOR_UNSIGNED && keyMajor !== MAJOR_NEGATIVE) {
    fail('map key is not a text string or an integer', pos);
  }
  return skipItem(bytes, skipItem(bytes, pos, depth), depth);
}

function checkDepth(depth: number, offset: number): void {
  if (depth >= MAX_NESTING) fail(`nesting deeper than ${MAX_NESTING} levels`, offset);
}

function readUint32(bytes: Uint8Array, pos: number): number {
  return ((bytes[pos] << 24) | (bytes[pos + 1] << 16) | (bytes[pos + 2] << 8) | bytes[pos + 3]) >>> 0;
}

/** cbor-x would replace invalid UTF-8 with U+FFFD; JSON decoding rejects it, so this does too. */
function isAsciiOrUtf8(bytes: Uint8Array, start: number, end: number): boolean {
  for (let i = start; i < end; i++) {
    if (bytes[i] >= 0x80) return isUtf8(bytes.subarray(i, end));
  }
  return true;
}
