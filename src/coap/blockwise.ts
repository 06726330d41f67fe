/**
 * Block-wise transfers (RFC 7959) for a server:
 * - the Block1/Block2 option value codec;
 * - Block1: reassembly of a request body sent in blocks, in order, under a size cap;
 * - Block2: the stored body of a large response, from which every later block
 *   is served, so that the request behind it runs once whatever the number of
 *   blocks the client fetches, and the framing of one block of it.
 * Both stores are bounded and expire (see BoundedStore).
 */
import { BoundedStore, StoreLimits } from './boundedStore';
import { Option } from './constants';
import { CoapOption, encodeUint, readUint, withContentFormat, withOption } from './message';

export interface Block {
  num: number;
  more: boolean;
  /** Size exponent: the block size is 2 ** (szx + 4). 7 is BERT, for TCP only. */
  szx: number;
}

export function decodeBlock(value: Buffer): Block | null {
  if (value.length > 3) return null;
  const n = readUint(value);
  return { num: n >>> 4, more: (n & 0x08) !== 0, szx: n & 0x07 };
}

export function encodeBlock(num: number, more: boolean, szx: number): Buffer {
  return encodeUint(num * 16 + (more ? 8 : 0) + szx);
}

export function blockSize(szx: number): number {
  return 1 << (szx + 4);
}

/** Largest szx whose block fits in `bytes` (bytes >= 16). */
export function szxFor(bytes: number): number {
  let szx = 0;
  while (szx < 6 && blockSize(szx + 1) <= bytes) szx++;
  return szx;
}

export type Block1Outcome =
  | { kind: 'continue' }
  | { kind: 'complete'; body: Buffer }
  | { kind: 'too-large'; limit: number }
  | { kind: 'incomplete'; reason: string }
  | { kind: 'bad'; reason: string };

interface Upload {
  parts: Buffer[];
  received: number;
}

export class Block1Assembler {
  private readonly uploads: BoundedStore<Upload>;

  constructor(limits: StoreLimits, private readonly maxBody: () => number) {
    this.uploads = new BoundedStore(limits);
  }

  /**
   * Takes one block of the upload named `key`. `announced` is the request's
   * Size1 option: a body announced over the cap is refused before it is sent.
   */
  accept(key: string, block: Block, payload: Buffer, announced: number | undefined, now: number): Block1Outcome {
    const size = blockSize(block.szx);
    const limit = this.maxBody();
    const offset = block.num * size;
    if (block.szx === 7) return { kind: 'bad', reason: 'BERT blocks (szx 7) are for CoAP over TCP' };
    if (block.more && payload.length !== size) {
      return { kind: 'bad', reason: `a block with more to come must be ${size} bytes, got ${payload.length}` };
    }
    if (announced !== undefined && announced > limit) {
      this.uploads.delete(key);
      return { kind: 'too-large', limit };
    }
    let upload: Upload | undefined;
    if (block.num === 0) {
      upload = { parts: [], received: 0 };
    } else {
      upload = this.uploads.get(key, now);
      if (upload === undefined) return { kind: 'incomplete', reason: `no upload in progress for block ${block.num}` };
      if (upload.received !== offset) {
        this.uploads.delete(key);
        return { kind: 'incomplete', reason: `expected the block at offset ${upload.received}, got ${offset}` };
      }
    }
    if (offset + payload.length > limit) {
      this.uploads.delete(key);
      return { kind: 'too-large', limit };
    }
    upload.parts.push(payload);
    upload.received += payload.length;
    if (!block.more) {
      this.uploads.delete(key);
      return { kind: 'complete', body: upload.parts.length === 1 ? upload.parts[0] : Buffer.concat(upload.parts) };
    }
    this.uploads.set(key, upload, upload.received + 128, now);
    return { kind: 'continue' };
  }

  sweep(now: number): void {
    this.uploads.sweep(now);
  }

  clear(): void {
    this.uploads.clear();
  }

  get stats(): { uploads: number; bytes: number } {
    return { uploads: this.uploads.size, bytes: this.uploads.bytes };
  }
}

export interface StoredBody {
  /** payloadDigest of the request body it answers ('' when none is known). */
  request: string;
  code: number;
  contentFormat: number | undefined;
  etag: Buffer;
  payload: Buffer;
}

export class Block2Store {
  private readonly bodies: BoundedStore<StoredBody>;
  private nextEtag = (Math.random() * 0xffffffff) >>> 0;

  constructor(limits: StoreLimits) {
    this.bodies = new BoundedStore(limits);
  }

  /** Keeps a response body for its later blocks and gives it a fresh ETag. */
  store(key: string, request: string, code: number, contentFormat: number | undefined, payload: Buffer, now: number): StoredBody {
    const etag = Buffer.allocUnsafe(4);
    etag.writeUInt32BE(this.nextEtag);
    this.nextEtag = (this.nextEtag + 1) >>> 0;
    const body = { request, code, contentFormat, etag, payload };
    this.bodies.set(key, body, payload.length + request.length + 128, now);
    return body;
  }

  get(key: string, now: number): StoredBody | undefined {
    return this.bodies.get(key, now);
  }

  delete(key: string): void {
    this.bodies.delete(key);
  }

  sweep(now: number): void {
    this.bodies.sweep(now);
  }

  clear(): void {
    this.bodies.clear();
  }

  get stats(): { bodies: number; bytes: number } {
    return { bodies: this.bodies.size, bytes: this.bodies.bytes };
  }
}

/** An answer ready for the wire: code, options in order, payload. */
export interface Framed {
  code: number;
  options: readonly CoapOption[];
  payload: Buffer;
}

/** Block `num` of a stored body with its ETag, Content-Format, Block2 (and Size2 when asked); null past the end. */
export function blockOf(body: StoredBody, extra: readonly CoapOption[], num: number, szx: number, wantsSize2: boolean): Framed | null {
  const size = blockSize(szx);
  const start = num * size;
  if (num > 0 && start >= body.payload.length) return null;
  const end = Math.min(start + size, body.payload.length);
  let options = withContentFormat(withOption(extra, Option.ETAG, body.etag), body.contentFormat);
  options = withOption(options, Option.BLOCK2, encodeBlock(num, end < body.payload.length, szx));
  if (wantsSize2) options = withOption(options, Option.SIZE2, encodeUint(body.payload.length));
  return { code: body.code, options, payload: body.payload.subarray(start, end) };
}
