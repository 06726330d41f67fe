/**
 * Per-device state, in one place: one Kuzzle ClientConnection per remote
 * endpoint (address and port), created on its first request and removed from
 * Kuzzle after `idleTimeoutMs` without traffic, on `disconnect`, or when the
 * plugin stops (a device with live observe relations is never idle). The
 * number of endpoints is bounded.
 */
import type { Remote } from '../coap/exchange';
import type { ClientConnection, EntryPoint, ProtocolContext } from './host';

export interface Endpoint {
  readonly remote: Remote;
  readonly connection: ClientConnection;
  lastSeen: number;
  /** A token bound to this endpoint by auth:login, when sessions are enabled. */
  session: { jwt: string; expiresAt: number } | null;
}

/** The address Kuzzle should see: an IPv4 client of a dual-stack socket, without its "::ffff:" mapping. */
export function clientIp(address: string): string {
  return address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address;
}

export class Endpoints {
  private readonly byKey = new Map<string, Endpoint>();
  private readonly byConnectionId = new Map<string, Endpoint>();

  constructor(
    private readonly protocol: string,
    private readonly entryPoint: EntryPoint,
    private readonly context: ProtocolContext,
    private readonly limits: { idleTimeoutMs: number; maxConnections: number },
    /** Told before an endpoint's connection is removed from Kuzzle. */
    private readonly onRemove: (endpoint: Endpoint) => void,
  ) {}

  get size(): number {
    return this.byKey.size;
  }

  /** The endpoint of a request, created on first contact; undefined when the bound is reached. */
  touch(remote: Remote, now: number): Endpoint | undefined {
    let endpoint = this.byKey.get(remote.key);
    if (endpoint === undefined) {
      if (this.byKey.size >= this.limits.maxConnections) return undefined;
      const connection = new this.context.ClientConnection(this.protocol, [clientIp(remote.address)]);
      // Kuzzle's uuid comes as a chain of string pieces (~490 B); reading a character flattens it (~63 B).
      connection.id.charCodeAt(0);
      endpoint = { remote, connection, lastSeen: now, session: null };
      this.byKey.set(remote.key, endpoint);
      this.byConnectionId.set(connection.id, endpoint);
      this.entryPoint.newConnection(connection);
    }
    endpoint.lastSeen = now;
    return endpoint;
  }

  byConnection(connectionId: string): Endpoint | undefined {
    return this.byConnectionId.get(connectionId);
  }

  /** Forgets an endpoint and tells Kuzzle its connection is gone. */
  remove(endpoint: Endpoint): void {
    if (this.byKey.get(endpoint.remote.key) !== endpoint) return;
    this.byKey.delete(endpoint.remote.key);
    this.byConnectionId.delete(endpoint.connection.id);
    this.onRemove(endpoint);
    this.entryPoint.removeConnection(endpoint.connection.id);
  }

  /** Removes endpoints idle for longer than the configured time, except those `busy` keeps (live relations). */
  sweep(now: number, busy: (endpoint: Endpoint) => boolean): number {
    const cutoff = now - this.limits.idleTimeoutMs;
    let removed = 0;
    for (const endpoint of this.byKey.values()) {
      if (endpoint.lastSeen <= cutoff && !busy(endpoint)) {
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
