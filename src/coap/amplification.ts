/**
 * The amplification limit (RFC 7252 §11.3, RFC 9175 §2.4). A peer that has not
 * shown that it receives at its address may have been spoofed by someone who
 * wants our answers to flood it, so it is sent at most `factor` times the bytes
 * it sent in an exchange, retransmissions included.
 *
 * An answer over that budget is withheld: it is kept here (bounded, for the
 * Echo lifetime) and the peer gets 4.01 with an Echo value instead. A peer that
 * received it repeats the request with the value (libcoap's clients do so on
 * their own), which verifies it, and gets the withheld answer: the request is
 * not run a second time, which matters for a POST. The whole answer is kept,
 * not the datagram: the repetition may ask another block size, or come from
 * another port, and its answer goes down the layers as any other (a large body
 * is stored again for the blocks that follow, under the repetition's key).
 *
 * It owns the budget arithmetic, the Echo values and the withheld answers; the
 * message layer decides when to ask (unverified peers only).
 */
import { BoundedStore } from './boundedStore';
import { EchoCheck, EchoScope, EchoValues } from './echo';
import type { CoapResponse, Exchange } from './exchange';
import { payloadDigest } from './message';

export interface AmplificationOptions {
  /** Bytes sent per byte received from an unverified peer; 0 turns the limit off. */
  factor: number;
  echoLifetimeMs: number;
  echoScope: EchoScope;
  maxWithheld: number;
  maxWithheldBytes: number;
}

interface Withheld {
  /** The request it answers: method, path, query, Block1 number and a hash of the datagram's payload. */
  readonly request: string;
  readonly answer: CoapResponse;
}

export type Replay = { kind: 'answer'; answer: CoapResponse } | { kind: 'lost' } | { kind: 'none' };

const NONE: Replay = { kind: 'none' };
const LOST: Replay = { kind: 'lost' };

export class Amplification {
  private readonly echo: EchoValues;
  private readonly withheld: BoundedStore<Withheld>;
  private readonly counters = { challenged: 0, withheld: 0, replayed: 0, lost: 0, silenced: 0 };

  constructor(private readonly options: AmplificationOptions) {
    this.echo = new EchoValues(options.echoLifetimeMs, options.echoScope);
    this.withheld = new BoundedStore({
      maxEntries: options.maxWithheld,
      maxBytes: options.maxWithheldBytes,
      lifetimeMs: options.echoLifetimeMs,
    });
  }

  get enabled(): boolean {
    return this.options.factor > 0;
  }

  get stats(): Record<string, number> {
    return { ...this.counters, withheldNow: this.withheld.size, withheldBytes: this.withheld.bytes };
  }

  /** Bytes the exchange's budget still allows. */
  remaining(exchange: Exchange): number {
    return Math.max(0, this.options.factor * exchange.bytesIn - exchange.bytesOut);
  }

  /** How many datagrams of `size` bytes the exchange's budget still allows. */
  allowance(exchange: Exchange, size: number): number {
    return Math.floor(this.remaining(exchange) / size);
  }

  checkEcho(exchange: Exchange): EchoCheck {
    return this.echo.check(exchange.echo as Buffer, exchange.remote);
  }

  /** An Echo value for a challenge; with `answer`, the answer is kept for the request's repetition. */
  challenge(exchange: Exchange, answer: CoapResponse | null, now: number): Buffer {
    const value = this.echo.issue(exchange.remote, answer !== null);
    this.counters.challenged++;
    if (answer !== null) {
      this.counters.withheld++;
      let bytes = 256 + (answer.payload?.length ?? 0);
      for (const option of answer.options ?? []) bytes += option.value.length + 16;
      this.withheld.set(keyOf(exchange, value), { request: requestOf(exchange), answer }, bytes, now);
    }
    return value;
  }

  /**
   * The answer withheld for the request that returns a withheld Echo value: it runs once only.
   * Handed out once: a retransmission of the repetition is answered by deduplication.
   */
  replay(exchange: Exchange, now: number): Replay {
    const key = keyOf(exchange, exchange.echo as Buffer);
    const kept = this.withheld.get(key, now);
    if (kept === undefined) {
      this.counters.lost++;
      return LOST;
    }
    if (kept.request !== requestOf(exchange)) return NONE; // another request that reuses the value
    this.withheld.delete(key);
    this.counters.replayed++;
    return { kind: 'answer', answer: kept.answer };
  }

  /** Counts an answer that not even a bare challenge fitted: nothing was sent. */
  silenced(): void {
    this.counters.silenced++;
  }

  sweep(now: number): void {
    this.withheld.sweep(now);
  }

  clear(): void {
    this.withheld.clear();
  }
}

/** By IP address and value: the repetition may come from another port (see echo.ts). */
function keyOf(exchange: Exchange, echo: Buffer): string {
  return `${exchange.remote.address}|${echo.toString('base64')}`;
}

/** The request as its datagram carries it (the last block of a Block1 upload): what its repetition carries too. */
function requestOf(exchange: Exchange): string {
  return `${exchange.method}|${exchange.path.join('/')}?${exchange.query.join('&')}|${exchange.block1?.num ?? ''}|${payloadDigest(exchange.message.payload)}`;
}
