/**
 * Message deduplication (RFC 7252 §4.5): remembers, per (endpoint, message ID),
 * what was answered, for EXCHANGE_LIFETIME, so that a retransmitted request is
 * answered again and never executed twice.
 *
 * An entry is `null` while the first copy is still being processed and the
 * datagram that answered it (piggybacked response or empty ACK) afterwards.
 */
import { BoundedStore } from './boundedStore';
import { EXCHANGE_LIFETIME_MS } from './constants';

/**
 * Memory of one entry besides its key's characters and its answer's bytes, as heap snapshots
 * showed it (npm run bench -- --heap-detail): the answer's Buffer view, the concatenated key
 * string's pieces, the map's storage and the store's slot.
 */
const ENTRY_OVERHEAD = 500;

/**
 * Answers are copied into slabs of their own: a datagram from Node's shared Buffer pool would
 * keep its whole 8 KB pool page alive, with every other request's allocations in it. Entries
 * leave in age order, so slabs are freed in order too.
 */
const SLAB_SIZE = 64 * 1024;

export interface DeduplicationLimits {
  maxEntries: number;
  maxBytes: number;
}

export type Seen = { state: 'new' } | { state: 'in-progress' } | { state: 'answered'; answer: Buffer };

const NEW: Seen = { state: 'new' };
const IN_PROGRESS: Seen = { state: 'in-progress' };

export class Deduplicator {
  private readonly store: BoundedStore<Buffer | null>;
  private slab = Buffer.allocUnsafeSlow(SLAB_SIZE);
  private slabUsed = 0;

  constructor(limits: DeduplicationLimits, lifetimeMs = EXCHANGE_LIFETIME_MS) {
    this.store = new BoundedStore({ ...limits, lifetimeMs });
  }

  /** Looks a message up and, when it is new, records it as in progress. */
  check(key: string, now: number): Seen {
    const answer = this.store.get(key, now);
    if (answer === undefined) {
      this.store.set(key, null, ENTRY_OVERHEAD + key.length, now);
      return NEW;
    }
    return answer === null ? IN_PROGRESS : { state: 'answered', answer };
  }

  /** Records the datagram that answered the message, to replay it for duplicates. */
  answered(key: string, answer: Buffer): void {
    this.store.update(key, this.keep(answer), ENTRY_OVERHEAD + key.length + answer.length);
  }

  private keep(answer: Buffer): Buffer {
    if (answer.length > SLAB_SIZE / 8) return Buffer.from(answer); // rare: large piggybacked answers
    if (this.slabUsed + answer.length > SLAB_SIZE) {
      this.slab = Buffer.allocUnsafeSlow(SLAB_SIZE);
      this.slabUsed = 0;
    }
    const kept = this.slab.subarray(this.slabUsed, this.slabUsed + answer.length);
    answer.copy(kept);
    this.slabUsed += answer.length;
    return kept;
  }

  sweep(now: number): void {
    this.store.sweep(now);
  }

  clear(): void {
    this.store.clear();
  }

  get stats(): { entries: number; bytes: number; evicted: number } {
    return { entries: this.store.size, bytes: this.store.bytes, evicted: this.store.evicted };
  }
}
