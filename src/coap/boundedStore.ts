/**
 * An insertion-ordered map with a lifetime, a count bound and a byte bound.
 *
 * It backs every per-exchange memory of the transport (deduplication,
 * Block1 reassembly, stored Block2 bodies, recent notifications) so that each
 * has the same guarantees: nothing outlives its lifetime, and when a bound is
 * reached the oldest entries go first.
 *
 * Age order is kept in a queue of slots beside the map, not by iterating the
 * map: a Map used first-in first-out keeps its deleted entries at the front
 * until it rehashes, and every new iterator walks over them (measured: 14 to
 * 115 µs per eviction once the deduplication store was full). A replaced or
 * deleted slot stays in the queue, marked dead, and is skipped when it reaches
 * the front.
 */
export interface StoreLimits {
  maxEntries: number;
  maxBytes: number;
  lifetimeMs: number;
}

interface Slot<V> {
  readonly key: string;
  value: V;
  bytes: number;
  readonly expiresAt: number;
  live: boolean;
}

export class BoundedStore<V> {
  private readonly slots = new Map<string, Slot<V>>();
  private queue: Slot<V>[] = [];
  private head = 0;
  private totalBytes = 0;
  private evictedCount = 0;

  constructor(private readonly limits: StoreLimits) {}

  get size(): number {
    return this.slots.size;
  }

  get bytes(): number {
    return this.totalBytes;
  }

  /** Entries dropped by a bound before their lifetime ended. */
  get evicted(): number {
    return this.evictedCount;
  }

  get(key: string, now: number): V | undefined {
    const slot = this.slots.get(key);
    if (slot === undefined) return undefined;
    if (slot.expiresAt <= now) {
      this.remove(slot);
      return undefined;
    }
    return slot.value;
  }

  /** Adds or replaces an entry; a replaced entry moves to the back with a fresh lifetime. */
  set(key: string, value: V, bytes: number, now: number): void {
    const old = this.slots.get(key);
    if (old !== undefined) this.remove(old);
    const slot: Slot<V> = { key, value, bytes, expiresAt: now + this.limits.lifetimeMs, live: true };
    this.slots.set(key, slot);
    this.queue.push(slot);
    // Slots deleted out of order wait in the queue until the front reaches them: keep them few.
    if (this.queue.length - this.head > 2 * this.slots.size + 1024) {
      this.queue = this.queue.slice(this.head).filter((queued) => queued.live);
      this.head = 0;
    }
    this.totalBytes += bytes;
    this.enforceBounds();
  }

  /** Changes an entry's value and size in place: its age and lifetime stay. False when there is no such entry. */
  update(key: string, value: V, bytes: number): boolean {
    const slot = this.slots.get(key);
    if (slot === undefined) return false;
    this.totalBytes += bytes - slot.bytes;
    slot.value = value;
    slot.bytes = bytes;
    this.enforceBounds();
    return true;
  }

  delete(key: string): void {
    const slot = this.slots.get(key);
    if (slot !== undefined) this.remove(slot);
  }

  /** Drops expired entries; called from the transport's periodic sweep. */
  sweep(now: number): void {
    for (let slot = this.oldest(); slot !== undefined && slot.expiresAt <= now; slot = this.oldest()) {
      this.remove(slot);
    }
  }

  clear(): void {
    this.slots.clear();
    this.queue = [];
    this.head = 0;
    this.totalBytes = 0;
  }

  private enforceBounds(): void {
    while (this.slots.size > this.limits.maxEntries || this.totalBytes > this.limits.maxBytes) {
      const slot = this.oldest();
      if (slot === undefined) return;
      this.remove(slot);
      this.evictedCount++;
    }
  }

  /** The oldest live slot, dropping dead ones from the front of the queue. */
  private oldest(): Slot<V> | undefined {
    while (this.head < this.queue.length && !this.queue[this.head].live) this.head++;
    if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
    return this.queue[this.head];
  }

  private remove(slot: Slot<V>): void {
    slot.live = false;
    this.slots.delete(slot.key);
    this.totalBytes -= slot.bytes;
  }
}
