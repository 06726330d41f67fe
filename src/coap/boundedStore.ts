/**
 * An insertion-ordered map with a lifetime, a count bound and a byte bound.
 *
 * It backs every per-exchange memory of the transport (deduplication,
 * Block1 reassembly, stored Block2 bodies) so that each has the same
 * guarantees: nothing outlives its lifetime, and when a bound is reached the
 * oldest entries go first. Entries are kept in insertion order, which is also
 * time order, so expiry and eviction only ever look at the front of the map.
 */
export interface StoreLimits {
  maxEntries: number;
  maxBytes: number;
  lifetimeMs: number;
}

interface Slot<V> {
  value: V;
  bytes: number;
  expiresAt: number;
}

export class BoundedStore<V> {
  private readonly slots = new Map<string, Slot<V>>();
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
      this.remove(key, slot);
      return undefined;
    }
    return slot.value;
  }

  /** Adds or replaces an entry; a replaced entry moves to the back with a fresh lifetime. */
  set(key: string, value: V, bytes: number, now: number): void {
    const old = this.slots.get(key);
    if (old !== undefined) this.remove(key, old);
    this.slots.set(key, { value, bytes, expiresAt: now + this.limits.lifetimeMs });
    this.totalBytes += bytes;
    this.enforceBounds();
  }

  /** Changes an entry's value and size in place: its age and lifetime stay. */
  update(key: string, value: V, bytes: number): void {
    const slot = this.slots.get(key);
    if (slot === undefined) return;
    this.totalBytes += bytes - slot.bytes;
    slot.value = value;
    slot.bytes = bytes;
    this.enforceBounds();
  }

  delete(key: string): void {
    const slot = this.slots.get(key);
    if (slot !== undefined) this.remove(key, slot);
  }

  /** Drops expired entries; called from the transport's periodic sweep. */
  sweep(now: number): void {
    for (const [key, slot] of this.slots) {
      if (slot.expiresAt > now) break;
      this.remove(key, slot);
    }
  }

  clear(): void {
    this.slots.clear();
    this.totalBytes = 0;
  }

  private enforceBounds(): void {
    while (this.slots.size > this.limits.maxEntries || this.totalBytes > this.limits.maxBytes) {
      const first = this.slots.entries().next();
      if (first.done) return;
      this.remove(first.value[0], first.value[1]);
      this.evictedCount++;
    }
  }

  private remove(key: string, slot: Slot<V>): void {
    this.slots.delete(key);
    this.totalBytes -= slot.bytes;
  }
}
