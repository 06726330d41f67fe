/**
 * One remote endpoint (address and port) and everything the transport keeps
 * for it, in one place, as libcoap's `coap_session_t` does: its message-ID
 * sequence (RFC 7252 §4.4, from a random start), the IDs of our CONs still in
 * flight to it, whether it has shown that it receives at its address
 * (verified: it returned a fresh Echo value or acknowledged a CON of ours),
 * its observe relations and their notification queue, and when it was last
 * heard from.
 *
 * `Peers` bounds how many are kept. When the table is full, a peer that holds
 * nothing (no relation, no CON in flight) among the oldest goes, unverified
 * before verified, least recently heard first: a flood of spoofed sources
 * replaces its own entries, not the devices that answer. Deduplication entries and
 * block-wise bodies are not here: they live in byte-bounded stores of their
 * own, keyed by the peer, and expire there. They outlive a dropped peer on
 * purpose: a retransmission that arrives after the drop still gets its cached
 * answer, never a second run.
 */
import type { Security, Source } from './datagramSocket';
import type { Remote } from './exchange';
import type { ObserverQueue } from './observe';

const NONE_IN_FLIGHT: ReadonlySet<number> = new Set();

/** A peer is its own Remote: one object per endpoint, kept small (tens of thousands of idle devices). */
export class Peer implements Remote {
  verified = false;
  lastSeen: number;
  /** When it took its place in the table's order (see REORDER_AFTER_MS). */
  placedAt: number;
  /** Its observe relations and notification flow, once it registered one. */
  observer: ObserverQueue | null = null;
  /** Message IDs of our CONs to this peer not yet acknowledged, reset or given up (created when needed). */
  private flights: Set<number> | null = null;
  private nextId = Math.floor(Math.random() * 0x10000);

  constructor(
    readonly address: string,
    readonly port: number,
    readonly family: Remote['family'],
    readonly key: string,
    /** Who its DTLS session authenticated; null on plain UDP. A new session is a new peer. */
    readonly security: Security | null,
    now: number,
  ) {
    this.lastSeen = now;
    this.placedAt = now;
  }

  get remote(): Remote {
    return this;
  }

  get inFlight(): ReadonlySet<number> {
    return this.flights ?? NONE_IN_FLIGHT;
  }

  /** A CON of ours to this peer is in flight under `id`. */
  flying(id: number): void {
    (this.flights ??= new Set()).add(id);
  }

  landed(id: number): void {
    this.flights?.delete(id);
    if (this.flights?.size === 0) this.flights = null;
  }

  /** Holds nothing that dropping it would lose. */
  get idle(): boolean {
    return this.flights === null && (this.observer === null || this.observer.empty);
  }

  /** The next message ID that no CON of ours still in flight to this peer uses: a wrap must not reuse one. */
  allocateMessageId(): number {
    let id = this.nextId;
    for (let tries = 0; tries < 0x10000 && this.inFlight.has(id); tries++) id = (id + 1) & 0xffff;
    if (this.inFlight.has(id)) throw new Error(`all 65536 message IDs to ${this.key} are in flight`);
    this.nextId = (id + 1) & 0xffff;
    return id;
  }
}

/** How stale a peer's place in the table's order may get. */
const REORDER_AFTER_MS = 1000;

/** How many of the least recently heard peers are looked at for one to drop when the table is full. */
const EVICTION_SCAN = 64;

export class Peers {
  /**
   * By key, in the order of `placedAt`: a peer moves to the back when heard from REORDER_AFTER_MS
   * or more after it took its place, not on every datagram (that costs on the hot path), so the
   * front holds the least recently heard to within that time.
   */
  private readonly table = new Map<string, Peer>();
  private evictedCount = 0;
  /** Verified peers in the table, counted as they come and go (stats are polled). */
  private verifiedCount = 0;

  constructor(
    private readonly maxPeers: number,
    /** Told when a peer is dropped, to end what other layers hold for it. */
    private readonly onDrop: (peer: Peer) => void,
  ) {}

  get size(): number {
    return this.table.size;
  }

  get stats(): { peers: number; verified: number; evicted: number } {
    return { peers: this.table.size, verified: this.verifiedCount, evicted: this.evictedCount };
  }

  /** The peer has shown that it receives at its address. */
  verify(peer: Peer): void {
    if (peer.verified) return;
    peer.verified = true;
    if (this.table.get(peer.key) === peer) this.verifiedCount++;
  }

  get(key: string): Peer | undefined {
    return this.table.get(key);
  }

  /**
   * The peer of a datagram just received, created on first contact. When the table is full and
   * every peer it looked at holds state, the new peer is served without being kept.
   */
  heard(source: Source, now: number): Peer {
    const { key } = source;
    let peer = this.table.get(key);
    if (peer === undefined) {
      key.charCodeAt(0); // flattens the concatenated key: it is kept as long as the peer
      peer = new Peer(source.address, source.port, source.family, key, source.security, now);
      if (this.table.size >= this.maxPeers && !this.evictOne()) return peer;
      this.table.set(key, peer);
    } else if (now - peer.placedAt >= REORDER_AFTER_MS) {
      this.table.delete(key);
      this.table.set(key, peer);
      peer.placedAt = now;
    }
    peer.lastSeen = now;
    return peer;
  }

  /** Forgets a peer and everything other layers hold for it. */
  drop(peer: Peer): void {
    if (this.table.get(peer.key) !== peer) return;
    this.table.delete(peer.key);
    if (peer.verified) this.verifiedCount--;
    this.onDrop(peer);
  }

  /** Drops peers that hold nothing and were not heard from for `idleMs`. */
  sweep(now: number, idleMs: number): void {
    const cutoff = now - idleMs;
    for (const peer of this.table.values()) {
      if (peer.placedAt > cutoff) break; // the rest took their place later, and were heard from since
      if (peer.lastSeen <= cutoff && peer.idle) this.drop(peer);
    }
  }

  clear(): void {
    for (const peer of [...this.table.values()]) this.drop(peer);
  }

  /** Drops the least recently heard idle peer among the oldest entries, an unverified one if any. */
  private evictOne(): boolean {
    let unverified: Peer | undefined;
    let verified: Peer | undefined;
    let scanned = 0;
    for (const peer of this.table.values()) {
      if (scanned++ >= EVICTION_SCAN) break;
      if (!peer.idle) continue;
      if (!peer.verified) {
        if (unverified === undefined || peer.lastSeen < unverified.lastSeen) unverified = peer;
      } else if (verified === undefined || peer.lastSeen < verified.lastSeen) {
        verified = peer;
      }
    }
    const victim = unverified ?? verified;
    if (victim === undefined) return false;
    this.evictedCount++;
    this.drop(victim);
    return true;
  }
}
