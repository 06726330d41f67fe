/**
 * Reliability of the confirmable messages this server sends (RFC 7252 §4.2):
 * separate responses and, later, notifications. Each is retransmitted with
 * exponential back-off until the peer's ACK or RST, or until MAX_RETRANSMIT
 * retransmissions went unanswered. There is no timer per message: the
 * transport's periodic tick calls `due()`.
 */
export type Outcome = 'acked' | 'reset' | 'timeout' | 'cancelled';

/** Told once how a CON ended; `rttMs`: its round trip when acknowledged without retransmission (Karn), else null. */
export type OnSettled = (outcome: Outcome, rttMs: number | null) => void;

export interface Destination {
  readonly address: string;
  readonly port: number;
}

interface InFlight {
  readonly datagram: Buffer;
  readonly to: Destination;
  readonly onDone: OnSettled | undefined;
  readonly sentAt: number;
  retransmissions: number;
  /** At most this many retransmissions (fewer than MAX_RETRANSMIT when a byte budget says so). */
  readonly limit: number;
  timeoutMs: number;
  dueAt: number;
}

export interface RetransmissionParameters {
  ackTimeoutMs: number;
  ackRandomFactor: number;
  maxRetransmit: number;
  /** CONs of ours in flight, in all and to one peer: past these, what would be a CON goes as a NON. */
  maxInFlight: number;
  maxInFlightPerPeer: number;
}


export class Retransmitter {
  private readonly inFlight = new Map<string, InFlight>();

  constructor(
    private readonly params: RetransmissionParameters,
    private readonly send: (datagram: Buffer, to: Destination) => void,
  ) {}

  get size(): number {
    return this.inFlight.size;
  }

  has(key: string): boolean {
    return this.inFlight.has(key);
  }

  /**
   * Sends a CON message now and keeps it until it is settled. `key` is endpoint + message ID;
   * `limit` caps the retransmissions below MAX_RETRANSMIT.
   */
  start(key: string, datagram: Buffer, to: Destination, now: number, onDone?: OnSettled, limit = Infinity): void {
    const { ackTimeoutMs, ackRandomFactor, maxRetransmit } = this.params;
    const timeoutMs = ackTimeoutMs * (1 + Math.random() * (ackRandomFactor - 1));
    this.inFlight.set(key, {
      datagram, to, onDone, sentAt: now, retransmissions: 0, limit: Math.min(limit, maxRetransmit), timeoutMs, dueAt: now + timeoutMs,
    });
    this.send(datagram, to);
  }

  /** An ACK or RST from the peer for that message ID, at `now`; false when nothing was waiting for it. */
  settle(key: string, outcome: 'acked' | 'reset', now: number): boolean {
    return this.finish(key, outcome, now);
  }

  cancel(key: string): void {
    this.finish(key, 'cancelled');
  }

  /** Retransmits what is due and gives up on what exhausted its retransmissions. */
  due(now: number): void {
    for (const [key, message] of this.inFlight) {
      if (message.dueAt > now) continue;
      if (message.retransmissions >= message.limit) {
        this.finish(key, 'timeout');
        continue;
      }
      message.retransmissions++;
      message.timeoutMs *= 2;
      message.dueAt = now + message.timeoutMs;
      this.send(message.datagram, message.to);
    }
  }

  /** Ends every exchange, e.g. on close; each owner hears 'cancelled'. */
  cancelAll(): void {
    for (const key of [...this.inFlight.keys()]) this.finish(key, 'cancelled');
  }

  private finish(key: string, outcome: Outcome, now?: number): boolean {
    const message = this.inFlight.get(key);
    if (message === undefined) return false;
    this.inFlight.delete(key);
    const rttMs = outcome === 'acked' && message.retransmissions === 0 && now !== undefined ? now - message.sentAt : null;
    message.onDone?.(outcome, rttMs);
    return true;
  }
}
