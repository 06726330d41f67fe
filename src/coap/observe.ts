/**
 * Observe (RFC 7641), server side: the relations that GET/FETCH requests with
 * `Observe: 0` register, the notifications sent on them, and their end.
 *
 * It owns, per relation, the notification sequence and the choice of CON or
 * NON (RFC 7641 §4.5: NON by default, a CON at least every `conEvery`
 * notifications or `conIntervalMs`, so that dead observers are found), and,
 * per endpoint, flow control: at most one CON notification in flight, later
 * notifications waiting in a bounded queue whose overflow drops the oldest.
 *
 * A relation ends on deregistration (`Observe: 1`), a re-registration of its
 * token, an RST answering one of its notifications, a CON notification that is
 * never acknowledged (then every relation of that endpoint ends: it is
 * unreachable), or by the application. Its owner hears why through `onEnd`.
 */
import type { CoapResponse, Remote } from './exchange';
import type { Outcome } from './retransmission';

export type EndReason = 'deregistered' | 'replaced' | 'reset' | 'timeout' | 'ended' | 'closed';

export type NotificationType = 'non' | 'con' | 'as-registered';

export interface ObserveOptions {
  notificationType: NotificationType;
  /** With NON notifications: one in this many is sent CON. */
  conEvery: number;
  /** With NON notifications: a CON at least this often. */
  conIntervalMs: number;
  /** Notifications waiting per endpoint behind a CON in flight. */
  queueLength: number;
  maxRelations: number;
}

/** What the observe layer needs from the message layer to put a notification on the wire. */
export interface NotificationWire {
  /** Sends a notification; `sequence` null for a final one (no Observe option). Returns the message ID. */
  sendNotification(
    relation: Observation,
    response: CoapResponse,
    sequence: number | null,
    confirmable: boolean,
    onDone: ((outcome: Outcome) => void) | undefined,
  ): number;
}

/** 24-bit Observe sequence numbers (RFC 7641 §3.4). */
const SEQUENCE_MODULO = 1 << 24;

export class Observation {
  /** Last Observe value used on this relation. */
  sequence = 0;
  sinceCon = 0;
  lastConAt: number;
  ended = false;
  /** Set by the application: told once, when and why the relation ended. */
  onEnd: ((reason: EndReason) => void) | null = null;

  constructor(
    private readonly layer: ObserveLayer,
    readonly remote: Remote,
    readonly token: Buffer,
    /** Endpoint + token. */
    readonly key: string,
    /** The registration's resource: later Block2 requests of a large notification name it. */
    readonly resourceKey: string,
    readonly registeredConfirmable: boolean,
    /** The block size exponent the registration asked for, if any. */
    readonly szx: number | null,
    now: number,
  ) {
    this.lastConAt = now;
  }

  nextSequence(): number {
    this.sequence = (this.sequence + 1) % SEQUENCE_MODULO;
    return this.sequence;
  }

  notify(response: CoapResponse): void {
    this.layer.notify(this, response);
  }

  /** Ends the relation; a `final` response goes out without Observe so that the device knows. */
  end(final?: CoapResponse): void {
    this.layer.end(this, 'ended', final);
  }
}

interface Pending {
  relation: Observation;
  response: CoapResponse;
  final: boolean;
}

/** How many recent NON notifications per endpoint an RST can still be matched to. */
const RECENT_NON = 8;

interface ObserverEndpoint {
  relations: Set<Observation>;
  conInFlight: boolean;
  queue: Pending[];
  /** Ring of the last NON notifications' message IDs and relations, so that an RST ends the right one. */
  recentMessageIds: number[];
  recentRelations: (Observation | null)[];
  recentNext: number;
}

export class ObserveLayer {
  private readonly relations = new Map<string, Observation>();
  private readonly endpoints = new Map<string, ObserverEndpoint>();
  private readonly counters = { notifications: 0, dropped: 0, ended: 0 };

  constructor(
    private readonly options: ObserveOptions,
    private readonly wire: NotificationWire,
  ) {
  }

  get stats(): { relations: number; observers: number; notifications: number; dropped: number; ended: number; queued: number } {
    let queued = 0;
    for (const endpoint of this.endpoints.values()) queued += endpoint.queue.length;
    return { relations: this.relations.size, observers: this.endpoints.size, ...this.counters, queued };
  }

  static keyOf(remote: Remote, token: Buffer): string {
    return `${remote.key}|${token.toString('hex')}`;
  }

  find(remote: Remote, token: Buffer): Observation | undefined {
    return this.relations.get(ObserveLayer.keyOf(remote, token));
  }

  /** Registers a relation; null when the bound on relations is reached. Replaces a relation of the same token. */
  register(remote: Remote, token: Buffer, resourceKey: string, confirmable: boolean, szx: number | null, now: number): Observation | null {
    const key = ObserveLayer.keyOf(remote, token);
    const previous = this.relations.get(key);
    if (previous !== undefined) this.end(previous, 'replaced');
    if (this.relations.size >= this.options.maxRelations) return null;
    const relation = new Observation(this, remote, Buffer.from(token), key, resourceKey, confirmable, szx, now);
    this.relations.set(key, relation);
    let endpoint = this.endpoints.get(remote.key);
    if (endpoint === undefined) {
      endpoint = {
        relations: new Set(), conInFlight: false, queue: [],
        recentMessageIds: new Array(RECENT_NON).fill(-1), recentRelations: new Array(RECENT_NON).fill(null), recentNext: 0,
      };
      this.endpoints.set(remote.key, endpoint);
    }
    endpoint.relations.add(relation);
    return relation;
  }

  /** An RST from an endpoint: ends the relation whose recent NON notification it answers. */
  reset(remote: Remote, messageId: number): boolean {
    const endpoint = this.endpoints.get(remote.key);
    if (endpoint === undefined) return false;
    const at = endpoint.recentMessageIds.indexOf(messageId);
    const relation = at === -1 ? null : endpoint.recentRelations[at];
    if (relation === null) return false;
    endpoint.recentRelations[at] = null;
    this.end(relation, 'reset');
    return true;
  }

  notify(relation: Observation, response: CoapResponse): void {
    if (relation.ended) return;
    this.enqueue({ relation, response, final: false });
  }

  end(relation: Observation, reason: EndReason, final?: CoapResponse): void {
    if (relation.ended) return;
    relation.ended = true;
    this.relations.delete(relation.key);
    this.counters.ended++;
    const endpoint = this.endpoints.get(relation.remote.key);
    if (final !== undefined && endpoint !== undefined) this.enqueue({ relation, response: final, final: true });
    if (endpoint !== undefined) {
      endpoint.relations.delete(relation);
      this.forgetIfIdle(relation.remote.key, endpoint);
    }
    relation.onEnd?.(reason);
  }

  /** Ends every relation (server closing). */
  endAll(reason: EndReason): void {
    for (const relation of [...this.relations.values()]) this.end(relation, reason);
    this.endpoints.clear();
  }

  private enqueue(item: Pending): void {
    const endpoint = this.endpoints.get(item.relation.remote.key);
    if (endpoint === undefined) return;
    if (!endpoint.conInFlight) {
      this.send(endpoint, item);
      return;
    }
    endpoint.queue.push(item);
    if (endpoint.queue.length > this.options.queueLength) {
      // The oldest notification goes; a final one never does: it tells the device its relation ended.
      const oldest = endpoint.queue.findIndex((pending) => !pending.final);
      if (oldest !== -1) {
        endpoint.queue.splice(oldest, 1);
        this.counters.dropped++;
      }
    }
  }

  private send(endpoint: ObserverEndpoint, item: Pending): void {
    const { relation } = item;
    const now = Date.now();
    const confirmable = item.final || this.wantsConfirmable(relation, now);
    const sequence = item.final ? null : relation.nextSequence();
    if (confirmable) {
      relation.sinceCon = 0;
      relation.lastConAt = now;
      endpoint.conInFlight = true;
    } else {
      relation.sinceCon++;
    }
    this.counters.notifications++;
    const onDone = confirmable ? (outcome: Outcome): void => this.settled(endpoint, relation, outcome) : undefined;
    const messageId = this.wire.sendNotification(relation, item.response, sequence, confirmable, onDone);
    if (!confirmable) {
      endpoint.recentMessageIds[endpoint.recentNext] = messageId;
      endpoint.recentRelations[endpoint.recentNext] = relation;
      endpoint.recentNext = (endpoint.recentNext + 1) % RECENT_NON;
    }
  }

  private wantsConfirmable(relation: Observation, now: number): boolean {
    const { notificationType, conEvery, conIntervalMs } = this.options;
    if (notificationType === 'con' || (notificationType === 'as-registered' && relation.registeredConfirmable)) return true;
    return relation.sinceCon + 1 >= conEvery || now - relation.lastConAt >= conIntervalMs;
  }

  private settled(endpoint: ObserverEndpoint, relation: Observation, outcome: Outcome): void {
    endpoint.conInFlight = false;
    if (outcome === 'reset') this.end(relation, 'reset');
    if (outcome === 'timeout') {
      // The endpoint did not answer MAX_RETRANSMIT times: it is gone, and all its relations with it.
      endpoint.queue.length = 0;
      for (const other of [...endpoint.relations]) this.end(other, 'timeout');
    }
    if (outcome === 'cancelled') return;
    while (!endpoint.conInFlight && endpoint.queue.length > 0) {
      this.send(endpoint, endpoint.queue.shift() as Pending);
    }
    this.forgetIfIdle(relation.remote.key, endpoint);
  }

  private forgetIfIdle(key: string, endpoint: ObserverEndpoint): void {
    if (endpoint.relations.size === 0 && !endpoint.conInFlight && endpoint.queue.length === 0) this.endpoints.delete(key);
  }
}
