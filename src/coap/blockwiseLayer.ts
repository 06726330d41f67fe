/**
 * The block-wise layer (RFC 7959) between the message layer and the
 * resources. Going up, it reassembles Block1 uploads (the resources see whole
 * bodies only), refuses bodies over the size cap, and serves later Block2
 * blocks from the stored body of a large answer, so that the request behind it
 * runs once. Going down, it frames every answer and notification: whole when
 * it fits one block, else block `num` of a body it stores.
 *
 * Stored bodies are keyed by resource (endpoint, method, path, query), not by
 * token: libcoap's clients ask each later block with a new token and no
 * payload (measured with coap-client 4.3.1, for GET, POST and FETCH). Two
 * different requests still never share a body: a later-block request that
 * carries a payload is served only from a body whose request carried the same
 * one, a new block-0 answer replaces the stored body, and every body has an
 * ETag of its own for clients to tell them apart.
 *
 * It does not own the codecs and stores (blockwise.ts) nor how a framed answer
 * travels (the message layer).
 */
import { Block1Assembler, Block2Store, Framed, blockOf, blockSize, encodeBlock, szxFor } from './blockwise';
import type { StoreLimits } from './boundedStore';
import { now } from './clock';
import { Code, Option, Type } from './constants';
import type { CoapResponse, Exchange } from './exchange';
import type { ErrorFormatter } from './messageLayer';
import { CoapOption, encodeMessage, encodeUint, findOption, payloadDigest, readUint, withContentFormat, withOption } from './message';

const EMPTY = Buffer.alloc(0);
const SAFE_METHODS = new Set([1, 5]); // GET, FETCH: may run again to serve a block

export interface BlockwiseOptions {
  /** Preferred Block2 size (16..1024, a power of two). */
  blockSize: number;
  /** Largest request body, whole or reassembled, in bytes. */
  maxBodySize: () => number;
  blockwise: StoreLimits;
}

/** Where the layer sends what it does not handle itself. */
export interface BlockwiseNeighbours {
  /** A whole request, up to the resources. */
  request(exchange: Exchange): void;
  /**
   * A framed answer, down to the message layer, with the whole answer it was framed from; null
   * for a block of a stored body, which the request's repetition is served from again.
   */
  transmit(exchange: Exchange, framed: Framed, whole: CoapResponse | null): void;
  /** Bytes a separate answer to an unverified peer may take; null when no such limit applies. */
  separateBudget(exchange: Exchange): number | null;
}

export class BlockwiseLayer {
  private readonly uploads: Block1Assembler;
  private readonly bodies: Block2Store;
  private readonly preferredSzx: number;

  constructor(
    private readonly options: BlockwiseOptions,
    private readonly next: BlockwiseNeighbours,
    private readonly formatError: ErrorFormatter,
  ) {
    this.uploads = new Block1Assembler(options.blockwise, options.maxBodySize);
    this.bodies = new Block2Store(options.blockwise);
    this.preferredSzx = szxFor(options.blockSize);
  }

  get stats(): Record<string, unknown> {
    return { uploads: this.uploads.stats, storedBodies: this.bodies.stats };
  }

  // ---- up --------------------------------------------------------------

  request(exchange: Exchange): void {
    const at = exchange.receivedAt;
    if (exchange.block1 !== null) {
      if (!this.reassemble(exchange, at)) return;
    } else if (exchange.payload.length > this.options.maxBodySize()) {
      this.tooLarge(exchange, this.options.maxBodySize());
      return;
    }
    if (exchange.block2 !== null && exchange.block2.num > 0) {
      const stored = this.bodies.get(exchange.resourceKey, at);
      if (stored !== undefined && (stored.request === '' || exchange.payload.length === 0 || stored.request === payloadDigest(exchange.payload))) {
        exchange.answered = true;
        const block = blockOf(stored, [], exchange.block2.num, this.szxOf(exchange), exchange.wantsSize2);
        if (block === null) this.transmitPastTheEnd(exchange);
        else this.next.transmit(exchange, block, null);
        return;
      }
      if (!SAFE_METHODS.has(exchange.method)) {
        this.fail(exchange, Code.REQUEST_ENTITY_INCOMPLETE, 'block_expired',
          'the response these blocks belong to is no longer held: repeat the request from block 0');
        return;
      }
    }
    this.next.request(exchange);
  }

  /** Takes one Block1 block; true when the body is whole and the request can go up. */
  private reassemble(exchange: Exchange, at: number): boolean {
    const block = exchange.block1 as NonNullable<Exchange['block1']>;
    const size1 = findOption(exchange.message, Option.SIZE1);
    const outcome = this.uploads.accept(
      exchange.resourceKey, block, exchange.payload, size1 === undefined ? undefined : readUint(size1), at);
    switch (outcome.kind) {
      case 'complete':
        exchange.payload = outcome.body;
        return true;
      case 'continue':
        exchange.respond({ code: Code.CONTINUE });
        return false;
      case 'too-large':
        this.tooLarge(exchange, outcome.limit);
        return false;
      case 'incomplete':
        this.fail(exchange, Code.REQUEST_ENTITY_INCOMPLETE, 'block_incomplete', outcome.reason);
        return false;
      case 'bad':
        this.fail(exchange, Code.BAD_REQUEST, 'bad_block', outcome.reason);
        return false;
    }
  }

  private tooLarge(exchange: Exchange, limit: number): void {
    const response = this.formatError(exchange, Code.REQUEST_ENTITY_TOO_LARGE, 'request_too_large',
      `the request body exceeds the ${limit} bytes this server accepts`);
    const options = withOption(response.options ?? [], Option.SIZE1, encodeUint(limit));
    exchange.block1 = null; // no Block1 echo on a refusal
    exchange.respond({ ...response, options });
  }

  private fail(exchange: Exchange, code: number, reason: string, message: string): void {
    exchange.respond(this.formatError(exchange, code, reason, message));
  }

  // ---- down ------------------------------------------------------------

  /** Frames the answer to a request (with its Block1 acknowledgement) and hands it down. */
  answer(exchange: Exchange, response: CoapResponse, extra: readonly CoapOption[]): void {
    if (exchange.block1 !== null) {
      extra = withOption(extra, Option.BLOCK1, encodeBlock(exchange.block1.num, response.code === Code.CONTINUE, exchange.block1.szx));
    }
    const num = exchange.block2?.num ?? 0;
    let szx = this.szxOf(exchange);
    const budget = num === 0 ? this.next.separateBudget(exchange) : null;
    if (budget !== null) szx = fittingSzx(exchange, response, extra, szx, budget);
    const framed = this.frame(response, extra, exchange, szx, num, exchange.wantsSize2);
    if (framed === null) this.transmitPastTheEnd(exchange);
    else this.next.transmit(exchange, framed, extra.length === 0 && response.options === undefined ? response : { ...response, options: extra });
  }

  /** The first block (or the whole) of a notification, in the block size its registration asked for. */
  notification(response: CoapResponse, extra: readonly CoapOption[], resource: { readonly resourceKey: string }, szx: number | null): Framed {
    const size = szx === null ? this.preferredSzx : Math.min(szx, this.preferredSzx);
    return this.frame(response, extra, resource, size, 0, false) as Framed;
  }

  /**
   * The wire form of an answer: with its Content-Format and, when it does not fit one block (or
   * a later block is asked for), block `num` of the body, stored under the resource's key for
   * the blocks that follow. Null when `num` is past the end.
   */
  private frame(response: CoapResponse, extra: readonly CoapOption[], resource: { readonly resourceKey: string; readonly payload?: Buffer }, szx: number, num: number, wantsSize2: boolean): Framed | null {
    const payload = response.payload ?? EMPTY;
    if (payload.length <= blockSize(szx) && num === 0) {
      return { code: response.code, options: withContentFormat(extra, response.contentFormat), payload };
    }
    const request = resource.payload === undefined ? '' : payloadDigest(resource.payload);
    const body = this.bodies.store(resource.resourceKey, request, response.code, response.contentFormat, payload, now());
    return blockOf(body, extra, num, szx, wantsSize2);
  }

  /** 4.02 for a block past the end: sent whole, never stored, so the body being fetched stays. */
  private transmitPastTheEnd(exchange: Exchange): void {
    const response = this.formatError(exchange, Code.BAD_OPTION, 'bad_block', `block ${exchange.block2?.num} is past the end of the body`);
    const framed = { code: response.code, options: withContentFormat(response.options ?? [], response.contentFormat), payload: response.payload ?? EMPTY };
    this.next.transmit(exchange, framed, response);
  }

  private szxOf(exchange: Exchange): number {
    return exchange.block2 === null ? this.preferredSzx : Math.min(exchange.block2.szx, this.preferredSzx);
  }

  sweep(at: number): void {
    this.uploads.sweep(at);
    this.bodies.sweep(at);
  }

  clear(): void {
    this.uploads.clear();
    this.bodies.clear();
  }
}

const PROBE_ETAG = Buffer.alloc(4);

/**
 * The block size of a separate answer to an unverified peer: the largest whose first datagram
 * fits its budget twice (one retransmission), else once; `szx` when even the smallest does not
 * fit (the message layer challenges then). The peer's ACK of that block verifies it, and it
 * fetches the rest from the stored body: libcoap's clients do not repeat a request after a
 * separate 4.01 + Echo (measured with coap-client 4.3.1), but all follow Block2.
 */
function fittingSzx(exchange: Exchange, response: CoapResponse, extra: readonly CoapOption[], szx: number, budget: number): number {
  const payload = response.payload ?? EMPTY;
  const probe = { request: '', code: response.code, contentFormat: response.contentFormat, etag: PROBE_ETAG, payload };
  let once = -1;
  for (let s = szx; s >= 0; s--) {
    const framed = payload.length <= blockSize(s)
      ? { options: withContentFormat(extra, response.contentFormat), payload }
      : blockOf(probe, extra, 0, s, exchange.wantsSize2) as Framed;
    const size = encodeMessage(Type.CON, response.code, 0, exchange.token, framed.options, framed.payload).length;
    if (2 * size <= budget) return s;
    if (once < 0 && size <= budget) once = s;
  }
  return once < 0 ? szx : once;
}
