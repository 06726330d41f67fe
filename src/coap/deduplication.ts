/**
 * Message deduplication (RFC 7252 §4.5): remembers, per (endpoint, message ID),
 * what was answered, for EXCHANGE_LIFETIME, so that a retransmitted request is
 * answered again and never executed twice.
 *
 * An entry is `null` while the first copy is still being processed and the
 * datagram that answered it (piggybacked response or empty ACK) afterwards.
 *
 * Entries of unverified peers (any of which may be spoofed) live in a store of
 * their own, `unverifiedShare` of the bounds: a flood of spoofed sources
 * evicts its own entries, never those of devices that have shown they receive
 * at their address. Together the two stores keep within the configured bounds.
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
  /** Part of both bounds (0..1) for unverified peers' entries. */
  unverifiedShare: number;
}

export type Seen = { state: 'new' } | { state: 'in-progress' } | { state: 'answered'; answer: Buffer };

const NEW: Seen = { state: 'new' };
const IN_PROGRESS: Seen = { state: 'in-progress' };

export class Deduplicator {
  private readonly verified: BoundedStore<Buffer | null>;
  private readonly unverified: BoundedStore<Buffer | null>;
  private slab = Buffer.allocUnsafeSlow(SLAB_SIZE);
  private slabUsed = 0;

  constructor(limits: DeduplicationLimits, lifetimeMs = EXCHANGE_LIFETIME_MS) {
    const share = (bound: number, part: number): number => Math.max(1, Math.floor(bound * part));
    const { maxEntries, maxBytes, unverifiedShare } = limits;
    this.unverified = new BoundedStore({
      maxEntries: share(maxEntries, unverifiedShare), maxBytes: share(maxBytes, unverifiedShare), lifetimeMs,
    });
    this.verified = new BoundedStore({
      maxEntries: Math.max(1, maxEntries - share(maxEntries, unverifiedShare)),
      maxBytes: Math.max(1, maxBytes - share(maxBytes, unverifiedShare)),
      lifetimeMs,
    });
  }

  /** Looks a message up and, when it is new, records it as in progress in the store of its peer's kind. */
  check(key: string, verifiedPeer: boolean, now: number): Seen {
    const own = verifiedPeer ? this.verified : this.unverified;
    let answer = own.get(key, now);
    // A peer verified since its first copy, or forgotten and unverified again: the other store.
    if (answer === undefined) answer = (verifiedPeer ? this.unverified : this.verified).get(key, now); // null (in progress) is an answer here
    if (answer === undefined) {
      own.set(key, null, ENTRY_OVERHEAD + key.length, now);
      return NEW;
    }
    return answer === null ? IN_PROGRESS : { state: 'answered', answer };
  }

  /** Records the datagram that answered the message, to replay it for duplicates. */
  answered(key: string, answer: Buffer): void {
    const kept = this.keep(answer);
    const bytes = ENTRY_OVERHEAD + key.length + answer.length;
    if (!this.verified.update(key, kept, bytes)) this.unverified.update(key, kept, bytes);
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
    this.verified.sweep(now);
    this.unverified.sweep(now);
  }

  clear(): void {
    this.verified.clear();
    this.unverified.clear();
  }

  get stats(): { entries: number; bytes: number; evicted: number; unverifiedEntries: number; unverifiedEvicted: number } {
    const { verified, unverified } = this;
    return {
      entries: verified.size + unverified.size,
      bytes: verified.bytes + unverified.bytes,
      evicted: verified.evicted + unverified.evicted,
      unverifiedEntries: unverified.size,
      unverifiedEvicted: unverified.evicted,
    };
  }
}
