/**
 * Kuzzle realtime over CoAP Observe: registrations become Kuzzle
 * subscriptions, Kuzzle's channel calls (`joinChannel`, `leaveChannel`,
 * `broadcast`, `notify`) drive the relations, and the end of either side ends
 * the other:
 * - a relation that ends on the device's side (deregistration, RST, CON
 *   notifications never acknowledged) unsubscribes its Kuzzle room, unless
 *   another relation of the same connection still uses it;
 * - a subscription that ends on Kuzzle's side (`leaveChannel`, TokenExpired,
 *   connection removed) ends its relations with a final notification without
 *   Observe, so the device knows.
 */
import { Code } from '../coap/constants';
import type { Exchange } from '../coap/exchange';
import type { EndReason, Observation } from '../coap/observe';
import type { Envelope } from '../config';
import { Channels } from './channels';
import type { Endpoint, Endpoints } from './endpoints';
import type { Execute } from './execution';
import type { HostLog, KuzzleResponse } from './host';
import { fromKuzzle, pluginError, pluginResult, statusOf } from './responses';
import { Subscription, Subscriptions } from './subscriptions';

/** The channel on which Kuzzle notifies a connection of its own events (TokenExpired). */
const SERVER_CHANNEL = 'kuzzle:notification:server';

interface SubscribeResult {
  roomId?: unknown;
  channel?: unknown;
}

export class Realtime {
  private readonly channels = new Channels();
  private readonly subscriptions = new Subscriptions();

  constructor(
    private readonly protocol: string,
    private readonly execute: Execute,
    private readonly endpoints: Endpoints,
    private readonly log: HostLog,
  ) {}

  get stats(): Record<string, number> {
    return { joinedChannels: this.channels.channelCount, ...this.subscriptions.stats };
  }

  hasRelations(connectionId: string): boolean {
    return this.subscriptions.hasRelations(connectionId);
  }

  /** `Observe: 0` on /api/realtime/subscribe: subscribe in Kuzzle, then bind the relation to the channel. */
  subscribe(exchange: Exchange, endpoint: Endpoint, data: Record<string, unknown>, format: number, envelope: Envelope): void {
    const relation = exchange.acceptObservation();
    if (relation === null) {
      exchange.respond(pluginError(Code.SERVICE_UNAVAILABLE, 'network.coap.too_many_relations',
        'this server holds as many observe relations as it may; retry later', envelope, format));
      return;
    }
    data.body ??= {}; // GET carries no filter: the whole collection
    this.execute(data, endpoint.connection, (response: KuzzleResponse) => {
      const room = this.subscribed(response);
      if (room !== null) this.bind(relation, endpoint, room.channel, room.roomId, format, envelope, data.jwt as string | undefined);
      exchange.respond(fromKuzzle(response, envelope, format));
    });
  }

  /** `Observe: 0` on /channels/<channel>: a relation on a channel this connection joined by a POST subscribe. */
  attach(exchange: Exchange, endpoint: Endpoint, channel: string, format: number, envelope: Envelope): void {
    const roomId = this.subscriptions.roomOf(channel);
    if (!this.channels.channelsOf(endpoint.connection.id).has(channel) || roomId === undefined) {
      exchange.respond(pluginError(Code.NOT_FOUND, 'network.coap.channel_not_found',
        `this device has not subscribed to channel ${channel}: POST /api/realtime/subscribe first`, envelope, format));
      return;
    }
    const relation = exchange.acceptObservation();
    if (relation === null) {
      exchange.respond(pluginError(Code.SERVICE_UNAVAILABLE, 'network.coap.too_many_relations',
        'this server holds as many observe relations as it may; retry later', envelope, format));
      return;
    }
    this.bind(relation, endpoint, channel, roomId, format, envelope, endpoint.session?.jwt);
    exchange.respond(pluginResult({ roomId, channel }, envelope, format));
  }

  /** Remembers the room of the channel a realtime:subscribe answer names; null for a failed one. */
  subscribed(response: KuzzleResponse): { roomId: string; channel: string } | null {
    const result = (response.content as { result?: SubscribeResult } | null)?.result;
    if (response.status !== 200 || typeof result?.channel !== 'string' || typeof result.roomId !== 'string') return null;
    this.subscriptions.rememberRoom(result.channel, result.roomId);
    return { roomId: result.roomId, channel: result.channel };
  }

  joinChannel(channel: string, connectionId: string): void {
    this.channels.join(channel, connectionId);
  }

  leaveChannel(channel: string, connectionId: string): void {
    this.channels.leave(channel, connectionId);
    for (const subscription of this.subscriptions.of(connectionId, channel)) {
      this.endFromKuzzle(subscription, Code.NOT_FOUND, 'network.coap.subscription_ended', 'the subscription ended');
    }
    this.subscriptions.forgetRoom(channel);
  }

  broadcast(channels: readonly string[], payload: Record<string, unknown>): void {
    this.subscriptions.deliver(channels, payload);
  }

  notify(channels: readonly string[], connectionId: string, payload: Record<string, unknown>): void {
    if (payload.type === 'TokenExpired' && channels.includes(SERVER_CHANNEL)) {
      this.expireSession(connectionId, String(payload.message ?? 'Authentication Token Expired'));
      return;
    }
    this.subscriptions.deliver(channels, payload, connectionId);
  }

  /** The connection's token expired: its relations end with 4.01 (Kuzzle drops its subscriptions itself). */
  expireSession(connectionId: string, message: string): void {
    for (const subscription of this.subscriptions.of(connectionId)) {
      this.endFromKuzzle(subscription, Code.UNAUTHORIZED, 'security.token.expired', message);
    }
  }

  /** The connection goes away (disconnect, removal): Kuzzle drops its subscriptions; end the relations. */
  endConnection(connectionId: string): void {
    for (const subscription of this.subscriptions.of(connectionId)) {
      this.endFromKuzzle(subscription, Code.SERVICE_UNAVAILABLE, 'network.coap.disconnected', 'the device was disconnected');
    }
    for (const channel of this.channels.forget(connectionId)) this.subscriptions.forgetRoom(channel);
  }

  private bind(relation: Observation, endpoint: Endpoint, channel: string, roomId: string, format: number, envelope: Envelope, jwt: string | undefined): void {
    const subscription: Subscription = {
      relation, connectionId: endpoint.connection.id, channel, roomId, format, envelope, jwt, endedByKuzzle: false,
    };
    if (relation.ended) {
      // Deregistered while Kuzzle was subscribing: undo the subscription.
      this.unsubscribe(subscription);
      return;
    }
    this.subscriptions.add(subscription);
    relation.onEnd = (reason) => this.relationEnded(subscription, reason);
  }

  private endFromKuzzle(subscription: Subscription, code: number, id: string, message: string): void {
    subscription.endedByKuzzle = true;
    const error = { status: statusOf(code), id, message };
    const body = subscription.envelope === 'compact' ? error : { status: error.status, error, result: null, room: subscription.channel };
    subscription.relation.end(Subscriptions.final(subscription, code, body));
  }

  private relationEnded(subscription: Subscription, reason: EndReason): void {
    this.subscriptions.remove(subscription);
    this.log.debug(`[${this.protocol}] observe relation on ${subscription.channel} ended: ${reason}`);
    if (!subscription.endedByKuzzle && reason !== 'closed') this.unsubscribe(subscription);
    this.subscriptions.forgetRoom(subscription.channel);
  }

  private unsubscribe(subscription: Subscription): void {
    if (this.subscriptions.roomInUse(subscription.connectionId, subscription.roomId)) return;
    const endpoint = this.endpoints.byConnection(subscription.connectionId);
    if (endpoint === undefined) return; // the connection is gone, and its subscriptions with it
    const data: Record<string, unknown> = { controller: 'realtime', action: 'unsubscribe', body: { roomId: subscription.roomId } };
    if (subscription.jwt !== undefined) data.jwt = subscription.jwt;
    this.execute(data, endpoint.connection, (response) => {
      if (response.status !== 200) {
        this.log.debug(`[${this.protocol}] unsubscribe of room ${subscription.roomId} answered ${response.status}`);
      }
    });
  }
}
