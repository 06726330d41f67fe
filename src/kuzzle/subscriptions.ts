/**
 * CoAP observe relations bound to Kuzzle realtime channels: which relation
 * listens on which channel for which connection, how a Kuzzle notification
 * becomes a CoAP notification, and how a relation's end ends its Kuzzle
 * subscription (and the other way round). Every map is cleaned on every end.
 */
import type { Observation } from '../coap/observe';
import type { CoapResponse } from '../coap/exchange';
import { encodePayload } from '../codec/contentFormat';
import type { Envelope } from '../config';
import { coapCodeOf } from './responses';
import { addTo, removeFrom } from './setMaps';

export interface Subscription {
  readonly relation: Observation;
  readonly connectionId: string;
  readonly channel: string;
  readonly roomId: string;
  readonly format: number;
  readonly envelope: Envelope;
  /**
   * What the registration asked for (method, path, query but the JWT, body): a re-registration
   * on the same token that asks the same keeps the relation (RFC 7641 §4.1).
   */
  readonly identity: string;
  /** The token of the last (re-)registration: its relation's end unsubscribes with the same rights. */
  jwt: string | undefined;
  /** Kuzzle already dropped the subscription (leaveChannel, expired token, removed connection). */
  endedByKuzzle: boolean;
}

/** Fields of a notification a device needs; the compact envelope keeps only these. */
const COMPACT_FIELDS = ['type', 'action', 'event', 'scope', 'user', 'result'] as const;

export function notificationBody(payload: Record<string, unknown>, channel: string, envelope: Envelope): unknown {
  if (envelope === 'full') return { ...payload, room: channel };
  const compact: Record<string, unknown> = {};
  for (const field of COMPACT_FIELDS) if (payload[field] !== undefined) compact[field] = payload[field];
  return compact;
}

export class Subscriptions {
  private readonly byChannel = new Map<string, Set<Subscription>>();
  private readonly byConnection = new Map<string, Set<Subscription>>();
  private readonly byRelation = new Map<Observation, Subscription>();
  private notifications = 0;

  get stats(): { subscriptions: number; channels: number; notifications: number } {
    let subscriptions = 0;
    for (const set of this.byConnection.values()) subscriptions += set.size;
    return { subscriptions, channels: this.byChannel.size, notifications: this.notifications };
  }

  hasChannel(channel: string): boolean {
    return this.byChannel.has(channel);
  }

  add(subscription: Subscription): void {
    addTo(this.byChannel, subscription.channel, subscription);
    addTo(this.byConnection, subscription.connectionId, subscription);
    this.byRelation.set(subscription.relation, subscription);
  }

  remove(subscription: Subscription): void {
    removeFrom(this.byChannel, subscription.channel, subscription);
    removeFrom(this.byConnection, subscription.connectionId, subscription);
    this.byRelation.delete(subscription.relation);
  }

  ofRelation(relation: Observation): Subscription | undefined {
    return this.byRelation.get(relation);
  }

  hasRelations(connectionId: string): boolean {
    return this.byConnection.has(connectionId);
  }

  /** Another live subscription of the connection still uses this room: Kuzzle's subscription must stay. */
  roomInUse(connectionId: string, roomId: string): boolean {
    for (const other of this.byConnection.get(connectionId) ?? []) if (other.roomId === roomId) return true;
    return false;
  }

  /** Sends a Kuzzle notification to every relation on these channels, once per relation. */
  deliver(channels: readonly string[], payload: Record<string, unknown>, connectionId?: string): void {
    const code = coapCodeOf(typeof payload.status === 'number' ? payload.status : 200);
    for (const channel of channels) {
      const subscriptions = this.byChannel.get(channel);
      if (subscriptions === undefined) continue;
      const encoded = new Map<string, Buffer>(); // one encoding per format and envelope
      for (const subscription of subscriptions) {
        if (connectionId !== undefined && subscription.connectionId !== connectionId) continue;
        const variant = `${subscription.format}|${subscription.envelope}`;
        let bytes = encoded.get(variant);
        if (bytes === undefined) {
          bytes = encodePayload(subscription.format, notificationBody(payload, channel, subscription.envelope));
          encoded.set(variant, bytes);
        }
        this.notifications++;
        subscription.relation.notify({ code, contentFormat: subscription.format, payload: bytes });
      }
    }
  }

  /** Subscriptions of a connection, optionally on one channel only. */
  of(connectionId: string, channel?: string): Subscription[] {
    const all = [...(this.byConnection.get(connectionId) ?? [])];
    return channel === undefined ? all : all.filter((subscription) => subscription.channel === channel);
  }

  /** A final notification: `response` without Observe. */
  static final(subscription: Subscription, code: number, body: unknown): CoapResponse {
    return { code, contentFormat: subscription.format, payload: encodePayload(subscription.format, body) };
  }
}
