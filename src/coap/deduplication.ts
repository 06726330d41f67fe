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
 * showed it (npm run bench -- --heap-detail): the answer's Buffer object, the concatenated key
 * string's pieces, the map's storage, the store's slot and the shared Buffer pool a
 * retained answer keeps alive (measured about 690 B for a 200-byte answer).
 */
const ENTRY_OVERHEAD = 480;

export interface DeduplicationLimits {
  maxEntries: number;
  maxBytes: number;
}

export type Seen = { state: 'new' } | { state: 'in-progress' } | { state: 'answered'; answer: Buffer };

const NEW: Seen = { state: 'new' };
const IN_PROGRESS: Seen = { state: 'in-progress' };

export class Deduplicator {
  private readonly store: BoundedStore<Buffer | null>;

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
    this.store.update(key, answer, ENTRY_OVERHEAD + key.length + answer.length);
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
