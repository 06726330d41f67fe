/**
 * Observe (RFC 7641), server side: the relations that GET/FETCH requests with
 * `Observe: 0` register, the notifications sent on them, and their end.
 *
 * It owns, per relation, the notification sequence and the choice of CON or
 * NON (RFC 7641 §4.5: NON by default, a CON at least every `conEvery`
 * notifications or `conIntervalMs`, so that dead observers are found, each
 * relation's count starting at a random point so that a channel's relations
 * do not all send their CON on the same event), liveness (a relation quiet
 * for most of its Max-Age gets a heartbeat: a CON 2.03 Valid that the device
 * ACKs, or the relation ends; a device that hears nothing for Max-Age knows
 * its relation is gone), and,
 * per peer (kept on the Peer, as `observer`), flow control: at most one CON
 * notification in flight, NON notifications paced to one per round-trip
 * estimate on average (RFC 7641 §4.5.1: a bucket of PACING_BURST, refilled one
 * per round trip, estimated from the peer's CON notifications; a peer without
 * an estimate whose bucket is empty gets a CON, which gives one), later
 * notifications waiting in a bounded queue whose overflow drops the oldest.
 * It does not own the peers, nor message IDs and retransmission (the message
 * layer, through `NotificationWire`).
 *
 * A relation ends on deregistration (`Observe: 1`), an RST answering one of its
 * notifications, a CON notification that is never acknowledged (then every
 * relation of that endpoint ends: it is unreachable), or by the application. Its
 * owner hears why through `onEnd`.
 *
 * Re-registration (RFC 7641 §4.1): the application may answer a registration on
 * the relation its token already has (Exchange.renewObservation), which keeps its
 * Observe sequence. A new relation on a token that has one replaces it only once
 * its own registration is answered: until then events still reach the device on
 * the old one, and the new one goes on with its Observe numbers.
 */
import { now } from './clock';
import { Code, Option } from './constants';
import type { CoapResponse, Remote } from './exchange';
import type { Peer } from './peer';
import type { Outcome } from './retransmission';

/** RFC 7641 §4.5.1: without a round-trip estimate, one NON notification per 3 s at most. */
const NO_RTT_SPACING_MS = 3000;
/**
 * NON notifications a peer may get back to back before pacing holds the next: fewer than the 6
 * datagrams of ESP-IDF's default UDP receive queue, and enough that one event per relation to a
 * device with a few relations is never held.
 */
const PACING_BURST = 4;

export type EndReason = 'deregistered' | 'replaced' | 'reset' | 'timeout' | 'ended' | 'dropped' | 'closed';

export type NotificationType = 'non' | 'con' | 'as-registered';

export interface ObserveOptions {
  notificationType: NotificationType;
  /**
   * Max-Age (s) of registration answers and notifications: a relation quiet for half to three
   * quarters of it gets a heartbeat. 0: no Max-Age and no heartbeat.
   */
  maxAge: number;
  /** With NON notifications: one in this many is sent CON. */
  conEvery: number;
  /** With NON notifications: a CON at least this often. */
  conIntervalMs: number;
  /** Notifications waiting per endpoint behind a CON in flight or their NON slot. */
  queueLength: number;
  /** NON notifications to a peer at most one per round-trip estimate (RFC 7641 §4.5.1). */
  pacing: boolean;
  maxRelations: number;
  /** Relations one peer may hold: a single source cannot take the whole `maxRelations`. */
  maxRelationsPerPeer: number;
}

/** What the observe layer needs from the message layer to put a notification on the wire. */
export interface NotificationWire {
  /** Sends a notification; `sequence` null for a final one (no Observe option). Returns the message ID. */
  sendNotification(
    relation: Observation,
    response: CoapResponse,
    sequence: number | null,
    confirmable: boolean,
    onDone: ((outcome: Outcome, rttMs: number | null) => void) | undefined,
  ): number;
  /** Stops retransmitting a CON notification (its relation ended); its onDone hears 'cancelled'. */
  cancelNotification(peer: Peer, messageId: number): void;
  /** Whether a CON to this peer can be tracked now (bounds on CONs in flight). */
  canConfirm(peer: Peer): boolean;
}

/**
 * The heartbeat: 2.03 Valid (RFC 7641 §4.2, "nothing changed"), with an ETag as 2.03 requires and no
 * payload, so that a device tells it from an event by its code alone.
 */
export const HEARTBEAT: CoapResponse = Object.freeze({ code: Code.VALID, options: [{ number: Option.ETAG, value: Buffer.from('hb') }] });

/** 24-bit Observe sequence numbers (RFC 7641 §3.4). */
const SEQUENCE_MODULO = 1 << 24;

export class Observation {
  /** Last Observe value used on this relation. */
  sequence = 0;
  sinceCon: number;
  lastConAt: number;
  /** When it gets a heartbeat if nothing is sent on it before. */
  heartbeatAt: number;
  ended = false;
  /** The relation of the same token that this one replaces once its registration is answered. */
  replaces: Observation | null = null;
  /** Set by the application: told once, when and why the relation ended. */
  onEnd: ((reason: EndReason) => void) | null = null;

  constructor(
    private readonly layer: ObserveLayer,
    readonly peer: Peer,
    readonly token: Buffer,
    /** Endpoint + token. */
    readonly key: string,
    /** The registration's resource: later Block2 requests of a large notification name it. */
    readonly resourceKey: string,
    readonly registeredConfirmable: boolean,
    /** The block size exponent the registration asked for, if any. */
    readonly szx: number | null,
    at: number,
    options: ObserveOptions,
  ) {
    // Random phases: relations registered together (a channel, devices back after an outage) spread their CONs.
    this.sinceCon = Math.floor(Math.random() * options.conEvery);
    this.lastConAt = at - Math.random() * options.conIntervalMs;
    this.heartbeatAt = at + quietFor(options);
  }

  get remote(): Remote {
    return this.peer.remote;
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

/** A peer's relations and the flow of notifications to it. */
export class ObserverQueue {
  readonly relations = new Set<Observation>();
  conInFlight = false;
  /** The relation and message ID of the CON in flight, so that its relation's end stops it. */
  conRelation: Observation | null = null;
  conMessageId = -1;
  /** Smoothed round trip of its CON notifications (RFC 6298's 1/8 gain); null before the first. */
  rttMs: number | null = null;
  /** Pacing: NON notifications it may get now (a bucket of PACING_BURST, refilled one per round trip), as of `tokensAt`. */
  tokens = PACING_BURST;
  tokensAt = 0;
  /** Pacing: when its bucket holds a whole token again. */
  nextNonAt = 0;
  readonly queue: Pending[] = [];
  /** Ring of the last NON notifications' message IDs and relations, so that an RST ends the right one. */
  readonly recentMessageIds: number[] = new Array(RECENT_NON).fill(-1);
  readonly recentRelations: (Observation | null)[] = new Array(RECENT_NON).fill(null);
  recentNext = 0;

  get empty(): boolean {
    return this.relations.size === 0 && !this.conInFlight && this.queue.length === 0;
  }
}

export class ObserveLayer {
  private readonly relations = new Map<string, Observation>();
  /** Peers with an ObserverQueue, for stats and endAll. */
  private readonly observers = new Set<Peer>();
  /** Peers whose queue waits for their next NON slot (drained by `tick`). */
  private readonly paced = new Set<Peer>();
  private readonly counters = { notifications: 0, heartbeats: 0, dropped: 0, purged: 0, ended: 0, refusedPerPeer: 0 };

  constructor(
    private readonly options: ObserveOptions,
    private readonly wire: NotificationWire,
  ) {
  }

  get stats(): { relations: number; observers: number; notifications: number; heartbeats: number; dropped: number; purged: number; ended: number; refusedPerPeer: number; queued: number } {
    let queued = 0;
    for (const peer of this.observers) queued += peer.observer?.queue.length ?? 0;
    return { relations: this.relations.size, observers: this.observers.size, ...this.counters, queued };
  }

  static keyOf(remote: Remote, token: Buffer): string {
    return `${remote.key}|${token.toString('hex')}`;
  }

  find(remote: Remote, token: Buffer): Observation | undefined {
    return this.relations.get(ObserveLayer.keyOf(remote, token));
  }

  /**
   * Registers a relation; null when the bound on relations, in all or for this peer, is reached.
   * A relation of the same token is replaced once the registration is answered (see `registered`).
   */
  register(peer: Peer, token: Buffer, resourceKey: string, confirmable: boolean, szx: number | null, at: number): Observation | null {
    const key = ObserveLayer.keyOf(peer.remote, token);
    const previous = this.relations.get(key);
    if (previous === undefined && this.relations.size >= this.options.maxRelations) return null;
    if ((peer.observer?.relations.size ?? 0) - (previous === undefined ? 0 : 1) >= this.options.maxRelationsPerPeer) {
      this.counters.refusedPerPeer++;
      return null;
    }
    const relation = new Observation(this, peer, Buffer.from(token), key, resourceKey, confirmable, szx, at, this.options);
    if (previous !== undefined) {
      relation.replaces = previous;
      relation.sequence = previous.sequence; // the device sees Observe numbers keep increasing on this token
    }
    this.relations.set(key, relation);
    peer.observer ??= new ObserverQueue();
    peer.observer.relations.add(relation);
    this.observers.add(peer);
    return relation;
  }

  /** The registration of `relation` was answered: the relation it replaces, if any, ends now. */
  registered(relation: Observation): void {
    const previous = relation.replaces;
    relation.replaces = null;
    if (previous !== null) this.end(previous, 'replaced');
  }

  /** An RST from a peer: ends the relation whose recent NON notification it answers. */
  reset(peer: Peer, messageId: number): boolean {
    const endpoint = peer.observer;
    if (endpoint === null) return false;
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
    if (this.relations.get(relation.key) === relation) this.relations.delete(relation.key);
    this.counters.ended++;
    const endpoint = relation.peer.observer;
    if (endpoint !== null) {
      this.purge(endpoint, relation);
      if (endpoint.conInFlight && endpoint.conRelation === relation) {
        endpoint.conInFlight = false; // its retransmissions stop too: an ended relation sends nothing more
        this.wire.cancelNotification(relation.peer, endpoint.conMessageId);
      }
      if (final !== undefined) this.enqueue({ relation, response: final, final: true });
      endpoint.relations.delete(relation);
      this.drain(relation.peer);
      this.forgetIfIdle(relation.peer);
    }
    relation.onEnd?.(reason);
    this.registered(relation); // a relation that ends before its registration is answered takes the one it replaces with it
  }

  /** Ends every relation of a peer that is being dropped, without a final notification. */
  endPeer(peer: Peer, reason: EndReason): void {
    const endpoint = peer.observer;
    if (endpoint === null) return;
    endpoint.queue.length = 0;
    for (const relation of [...endpoint.relations]) this.end(relation, reason);
    peer.observer = null;
    this.observers.delete(peer);
  }

  /**
   * Heartbeats for the relations quiet since their time came (called about once a second): they go
   * through the peer's queue as CONs, behind anything in flight.
   */
  heartbeats(at: number): void {
    if (this.options.maxAge === 0) return;
    for (const relation of this.relations.values()) {
      if (relation.heartbeatAt > at) continue;
      relation.heartbeatAt = at + quietFor(this.options);
      this.counters.heartbeats++;
      this.enqueue({ relation, response: HEARTBEAT, final: false });
    }
  }

  /** Ends every relation (server closing). */
  endAll(reason: EndReason): void {
    for (const peer of [...this.observers]) this.endPeer(peer, reason);
  }

  /** An ended relation sends nothing more: its queued notifications go (counted as purged, not dropped). */
  private purge(endpoint: ObserverQueue, relation: Observation): void {
    const before = endpoint.queue.length;
    if (before === 0) return;
    let kept = 0;
    for (const item of endpoint.queue) if (item.relation !== relation) endpoint.queue[kept++] = item;
    endpoint.queue.length = kept;
    this.counters.purged += before - kept;
  }

  /** Sends what paced queues may send now (called on every transport tick). */
  tick(at: number): void {
    for (const peer of this.paced) {
      const endpoint = peer.observer;
      if (endpoint === null || endpoint.queue.length === 0) this.paced.delete(peer);
      else if (at >= endpoint.nextNonAt) this.drain(peer);
    }
  }

  private enqueue(item: Pending): void {
    const { peer } = item.relation;
    const endpoint = peer.observer;
    if (endpoint === null) return;
    endpoint.queue.push(item);
    this.drain(peer);
    if (endpoint.queue.length > this.options.queueLength) {
      // The oldest notification goes; a final one never does: it tells the device its relation ended.
      const oldest = endpoint.queue.findIndex((pending) => !pending.final);
      if (oldest !== -1) {
        endpoint.queue.splice(oldest, 1);
        this.counters.dropped++;
      }
    }
  }

  /**
   * Whether the item goes CON: a final notification, a heartbeat, the periodic CON, or any while
   * pacing has no round-trip estimate yet. One the message layer cannot track now (its bounds on
   * CONs in flight) goes as a NON.
   */
  private confirmable(endpoint: ObserverQueue, item: Pending, at: number): boolean {
    const { relation } = item;
    const estimating = this.options.pacing && endpoint.rttMs === null && endpoint.tokens < 1;
    const wanted = item.final || item.response === HEARTBEAT || this.wantsConfirmable(relation, at) || estimating;
    return wanted && this.wire.canConfirm(relation.peer);
  }

  private send(endpoint: ObserverQueue, item: Pending, confirmable: boolean, at: number): void {
    const { relation } = item;
    const sequence = item.final ? null : relation.nextSequence();
    relation.heartbeatAt = at + quietFor(this.options);
    if (confirmable) {
      relation.sinceCon = 0;
      relation.lastConAt = at;
      endpoint.conInFlight = true;
    } else {
      relation.sinceCon++;
      if (this.options.pacing) endpoint.tokens--;
    }
    this.counters.notifications++;
    const onDone = confirmable ? (outcome: Outcome, rttMs: number | null): void => this.settled(endpoint, relation, outcome, rttMs) : undefined;
    const messageId = this.wire.sendNotification(relation, item.response, sequence, confirmable, onDone);
    if (confirmable) {
      endpoint.conRelation = relation;
      endpoint.conMessageId = messageId;
    } else {
      endpoint.recentMessageIds[endpoint.recentNext] = messageId;
      endpoint.recentRelations[endpoint.recentNext] = relation;
      endpoint.recentNext = (endpoint.recentNext + 1) % RECENT_NON;
    }
  }

  private wantsConfirmable(relation: Observation, at: number): boolean {
    const { notificationType, conEvery, conIntervalMs } = this.options;
    if (notificationType === 'con' || (notificationType === 'as-registered' && relation.registeredConfirmable)) return true;
    return relation.sinceCon + 1 >= conEvery || at - relation.lastConAt >= conIntervalMs;
  }

  private settled(endpoint: ObserverQueue, relation: Observation, outcome: Outcome, rttMs: number | null): void {
    endpoint.conInFlight = false;
    if (rttMs !== null) endpoint.rttMs = endpoint.rttMs === null ? rttMs : endpoint.rttMs + (rttMs - endpoint.rttMs) / 8;
    if (outcome === 'reset') this.end(relation, 'reset');
    if (outcome === 'timeout') {
      // The endpoint did not answer MAX_RETRANSMIT times: it is gone, and all its relations with it.
      endpoint.queue.length = 0;
      for (const other of [...endpoint.relations]) this.end(other, 'timeout');
    }
    if (outcome === 'cancelled') return;
    this.drain(relation.peer);
    this.forgetIfIdle(relation.peer);
  }

  /**
   * Sends queued notifications, in order, until one is a CON (it waits for that one's ACK) or a
   * NON whose slot has not come (the peer waits in `paced`).
   */
  private drain(peer: Peer): void {
    const endpoint = peer.observer;
    if (endpoint === null) return;
    const at = now();
    if (this.options.pacing) refill(endpoint, at);
    while (!endpoint.conInFlight && endpoint.queue.length > 0) {
      const item = endpoint.queue[0];
      const confirmable = this.confirmable(endpoint, item, at);
      if (!confirmable && this.options.pacing && endpoint.tokens < 1) {
        endpoint.nextNonAt = at + (1 - endpoint.tokens) * (endpoint.rttMs ?? NO_RTT_SPACING_MS);
        this.paced.add(peer);
        return;
      }
      endpoint.queue.shift();
      this.send(endpoint, item, confirmable, at);
    }
  }

  private forgetIfIdle(peer: Peer): void {
    if (peer.observer?.empty !== true) return;
    peer.observer = null;
    this.observers.delete(peer);
  }
}

/** How long a relation may stay quiet before its heartbeat: half to three quarters of Max-Age, at random. */
function quietFor(options: ObserveOptions): number {
  return options.maxAge * 1000 * (0.5 + 0.25 * Math.random());
}

/** Adds the tokens earned since `tokensAt`: one per round trip (per 3 s without an estimate), PACING_BURST at most. */
function refill(endpoint: ObserverQueue, at: number): void {
  const interval = endpoint.rttMs ?? NO_RTT_SPACING_MS;
  endpoint.tokens = Math.min(PACING_BURST, endpoint.tokens + (at - endpoint.tokensAt) / Math.max(interval, 0.001));
  endpoint.tokensAt = at;
}
