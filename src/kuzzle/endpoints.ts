/**
 * Per-device state, in one place: one Kuzzle ClientConnection per remote
 * endpoint (address and port), created on its first request and removed from
 * Kuzzle after `idleTimeoutMs` without traffic, on `disconnect`, or when the
 * plugin stops (a device with live observe relations is never idle). The
 * number of endpoints is bounded: when the table is full, the least recently
 * active endpoint that is unverified (it never showed that it receives at its
 * address, so it may be spoofed) and holds no relation makes room, so a flood
 * of spoofed sources cannot lock real devices out.
 */
import type { Remote } from '../coap/exchange';
import type { ClientConnection, EntryPoint, ProtocolContext } from './host';

export interface Endpoint {
  readonly remote: Remote;
  readonly connection: ClientConnection;
  lastSeen: number;
  /** When it took its place in the table's order (see REORDER_AFTER_MS). */
  placedAt: number;
  /** The transport verified the endpoint's address (Echo, an ACK of ours). */
  verified: boolean;
  /** A token bound to this endpoint by auth:login, when sessions are enabled, and whose it is. */
  session: { jwt: string; expiresAt: number; kuid: string | null } | null;
}

/** How stale an endpoint's place in the table's order may get. */
const REORDER_AFTER_MS = 1000;

/** How many of the least recently active endpoints are looked at for one to drop when the table is full. */
const EVICTION_SCAN = 64;

/** The address Kuzzle should see: an IPv4 client of a dual-stack socket, without its "::ffff:" mapping. */
export function clientIp(address: string): string {
  return address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address;
}

export class Endpoints {
  /**
   * In the order of `placedAt`: an endpoint moves to the back when active REORDER_AFTER_MS or more
   * after it took its place, not on every request (that costs), so the front holds the least
   * recently active to within that time.
   */
  private readonly byKey = new Map<string, Endpoint>();
  private evictedCount = 0;
  private readonly byConnectionId = new Map<string, Endpoint>();

  constructor(
    private readonly protocol: string,
    private readonly entryPoint: EntryPoint,
    private readonly context: ProtocolContext,
    private readonly limits: { idleTimeoutMs: number; maxConnections: number },
    /** Told before an endpoint's connection is removed from Kuzzle. */
    private readonly onRemove: (endpoint: Endpoint) => void,
    /** Whether an endpoint holds live observe relations (it is then never dropped for room). */
    private readonly busy: (endpoint: Endpoint) => boolean,
  ) {}

  get size(): number {
    return this.byKey.size;
  }

  /** Endpoints dropped to make room for new ones. */
  get evicted(): number {
    return this.evictedCount;
  }

  /**
   * The endpoint of a request, created on first contact; undefined when the table is full and no
   * unverified endpoint without relations can make room.
   */
  touch(remote: Remote, now: number, verified: boolean): Endpoint | undefined {
    let endpoint = this.byKey.get(remote.key);
    if (endpoint === undefined) {
      if (this.byKey.size >= this.limits.maxConnections && !this.evictOne()) return undefined;
      const connection = new this.context.ClientConnection(this.protocol, [clientIp(remote.address)]);
      // Kuzzle's uuid comes as a chain of string pieces (~490 B); reading a character flattens it (~63 B).
      connection.id.charCodeAt(0);
      endpoint = { remote, connection, lastSeen: now, placedAt: now, verified, session: null };
      this.byConnectionId.set(connection.id, endpoint);
      this.entryPoint.newConnection(connection);
      this.byKey.set(remote.key, endpoint);
    } else if (now - endpoint.placedAt >= REORDER_AFTER_MS) {
      this.byKey.delete(remote.key);
      this.byKey.set(remote.key, endpoint);
      endpoint.placedAt = now;
    }
    endpoint.lastSeen = now;
    endpoint.verified ||= verified;
    return endpoint;
  }

  private evictOne(): boolean {
    let scanned = 0;
    for (const endpoint of this.byKey.values()) {
      if (scanned++ >= EVICTION_SCAN) return false;
      if (endpoint.verified || this.busy(endpoint)) continue;
      this.evictedCount++;
      this.remove(endpoint);
      return true;
    }
    return false;
  }

  byConnection(connectionId: string): Endpoint | undefined {
    return this.byConnectionId.get(connectionId);
  }

  removeKey(key: string): void {
    const endpoint = this.byKey.get(key);
    if (endpoint !== undefined) this.remove(endpoint);
  }

  /** Forgets an endpoint and tells Kuzzle its connection is gone. */
  remove(endpoint: Endpoint): void {
    if (this.byKey.get(endpoint.remote.key) !== endpoint) return;
    this.byKey.delete(endpoint.remote.key);
    this.byConnectionId.delete(endpoint.connection.id);
    this.onRemove(endpoint);
    this.entryPoint.removeConnection(endpoint.connection.id);
  }

  /** Removes endpoints idle for longer than the configured time, except those with live relations. */
  sweep(now: number): number {
    const cutoff = now - this.limits.idleTimeoutMs;
    let removed = 0;
    for (const endpoint of this.byKey.values()) {
      if (endpoint.placedAt > cutoff) break; // the rest took their place later, and were active since
      if (endpoint.lastSeen <= cutoff && !this.busy(endpoint)) {
        this.remove(endpoint);
        removed++;
      }
    }
    return removed;
  }

  removeAll(): void {
    for (const endpoint of [...this.byKey.values()]) this.remove(endpoint);
  }
}
