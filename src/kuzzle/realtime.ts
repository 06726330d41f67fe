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
import { payloadDigest } from '../coap/message';
import type { EndReason, Observation } from '../coap/observe';
import type { Envelope } from '../config';
import { Channels } from './channels';
import type { Endpoint, Endpoints } from './endpoints';
import type { Execute } from './execution';
import type { HostLog, KuzzleErrorJson, KuzzleResponse } from './host';
import { queryArgument } from './requestMapping';
import { fromKuzzle, pluginError, pluginResult, statusOf } from './responses';
import { Subscription, Subscriptions } from './subscriptions';

/** What a registration asks for, but the JWT it carries: a refreshed token renews the same relation. */
function identityOf(exchange: Exchange): string {
  const query = exchange.query.filter((item) => !item.startsWith('jwt='));
  return `${exchange.method}|${exchange.path.join('/')}|${query.join('&')}|${payloadDigest(exchange.payload)}`;
}

/** The channel on which Kuzzle notifies a connection of its own events (TokenExpired). */
const SERVER_CHANNEL = 'kuzzle:notification:server';

interface SubscribeResult {
  roomId?: unknown;
  channel?: unknown;
}

export class Realtime {
  private readonly channels = new Channels();
  private readonly subscriptions = new Subscriptions();
  /** The room of each channel a subscribe answer named, while a connection is in it or a relation uses it. */
  private readonly roomOfChannel = new Map<string, string>();
  /**
   * realtime:subscribe and :unsubscribe of one connection run one after the
   * other: Kuzzle keeps one subscription per connection and room, so an
   * unsubscribe overtaking a later subscribe to the same room would end it.
   */
  private readonly serial = new Map<string, Array<() => void>>();

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

  /**
   * `Observe: 0` on /api/realtime/subscribe: subscribe in Kuzzle, then bind the relation to the
   * channel. A re-registration of the same request on the same token subscribes again (Kuzzle keeps
   * one subscription per connection and room, and checks the token's rights again) and keeps the
   * relation.
   */
  subscribe(exchange: Exchange, endpoint: Endpoint, data: Record<string, unknown>, format: number, envelope: Envelope): void {
    const identity = identityOf(exchange);
    const renewed = this.renewal(exchange, endpoint, identity);
    const relation = renewed?.relation ?? this.acceptObservation(exchange, format, envelope);
    if (relation === null) return;
    data.body ??= {}; // GET carries no filter: the whole collection
    this.inOrder(endpoint, data, (response: KuzzleResponse) => {
      const room = this.subscribed(response);
      const jwt = data.jwt as string | undefined;
      if (room !== null && renewed !== undefined) renewed.jwt = jwt;
      else if (room !== null) this.bind(relation, endpoint, room.channel, room.roomId, format, envelope, jwt, identity);
      exchange.respond(fromKuzzle(response, envelope, format));
    });
  }

  /** `Observe: 0` on /channels/<channel>: a relation on a channel this connection joined by a POST subscribe. */
  attach(exchange: Exchange, endpoint: Endpoint, channel: string, format: number, envelope: Envelope): void {
    const roomId = this.roomOfChannel.get(channel);
    if (!this.channels.channelsOf(endpoint.connection.id).has(channel) || roomId === undefined) {
      exchange.respond(pluginError(Code.NOT_FOUND, 'network.coap.channel_not_found',
        `this device has not subscribed to channel ${channel}: POST /api/realtime/subscribe first`, envelope, format));
      return;
    }
    const jwt = queryArgument(exchange.query, 'jwt') ?? endpoint.session?.jwt;
    const identity = identityOf(exchange);
    const renewed = this.renewal(exchange, endpoint, identity);
    if (renewed !== undefined) {
      renewed.jwt = jwt;
    } else {
      const relation = this.acceptObservation(exchange, format, envelope);
      if (relation === null) return;
      this.bind(relation, endpoint, channel, roomId, format, envelope, jwt, identity);
    }
    exchange.respond(pluginResult({ roomId, channel }, envelope, format));
  }

  /**
   * The subscription a re-registration renews: the relation its token already has asks the same
   * (RFC 7641 §4.1); it then answers on that relation. Undefined for a new registration, or one
   * that asks for something else (a new relation replaces the old one once answered).
   */
  private renewal(exchange: Exchange, endpoint: Endpoint, identity: string): Subscription | undefined {
    const previous = exchange.currentObservation();
    const subscription = previous === undefined ? undefined : this.subscriptions.ofRelation(previous);
    if (subscription === undefined || subscription.connectionId !== endpoint.connection.id || subscription.identity !== identity) {
      return undefined;
    }
    exchange.renewObservation(subscription.relation);
    return subscription;
  }

  /** Remembers the room of the channel a realtime:subscribe answer names; null for a failed one. */
  subscribed(response: KuzzleResponse): { roomId: string; channel: string } | null {
    const result = (response.content as { result?: SubscribeResult } | null)?.result;
    if (response.status !== 200 || typeof result?.channel !== 'string' || typeof result.roomId !== 'string') return null;
    this.roomOfChannel.set(result.channel, result.roomId);
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
    this.forgetRoomIfUnused(channel);
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
    for (const channel of this.channels.forget(connectionId)) this.forgetRoomIfUnused(channel);
  }

  /** The relation the registration asks for, or a 5.03 when the transport holds as many as allowed. */
  private acceptObservation(exchange: Exchange, format: number, envelope: Envelope): Observation | null {
    const relation = exchange.acceptObservation();
    if (relation === null) {
      exchange.respond(pluginError(Code.SERVICE_UNAVAILABLE, 'network.coap.too_many_relations',
        'this server holds as many observe relations as it may; retry later', envelope, format));
    }
    return relation;
  }

  private bind(relation: Observation, endpoint: Endpoint, channel: string, roomId: string, format: number, envelope: Envelope, jwt: string | undefined, identity: string): void {
    const subscription: Subscription = {
      relation, connectionId: endpoint.connection.id, channel, roomId, format, envelope, identity, jwt, endedByKuzzle: false,
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
    this.forgetRoomIfUnused(subscription.channel);
  }

  private forgetRoomIfUnused(channel: string): void {
    if (this.channels.membersOf(channel).size === 0 && !this.subscriptions.hasChannel(channel)) this.roomOfChannel.delete(channel);
  }

  /**
   * Runs a realtime request after the connection's previous ones have answered; `wanted`, asked
   * when its turn comes, may still call it off.
   */
  private inOrder(endpoint: Endpoint, data: Record<string, unknown>, callback: (response: KuzzleResponse) => void, wanted?: () => boolean): void {
    const id = endpoint.connection.id;
    const next = (): void => {
      const queue = this.serial.get(id) as Array<() => void>;
      queue.shift();
      if (queue.length > 0) queue[0]();
      else this.serial.delete(id);
    };
    const answered = (response: KuzzleResponse): void => {
      try {
        callback(response);
      } finally {
        next();
      }
    };
    const run = (): void => {
      if (wanted !== undefined && !wanted()) {
        next();
        return;
      }
      try {
        this.execute(data, endpoint.connection, answered);
      } catch (error) {
        // Kuzzle's Request constructor refused the input: answer as Kuzzle would, and let the queue move on.
        const { status = 400, id: errorId = 'api.assert.invalid_argument', message = String(error) } = error as KuzzleErrorJson;
        answered({ raw: false, status, content: { status, error: { status, id: errorId, message }, result: null } });
      }
    };
    const queue = this.serial.get(id);
    if (queue === undefined) {
      this.serial.set(id, [run]);
      run();
    } else {
      queue.push(run);
    }
  }

  /**
   * Unsubscribes the room of an ended relation, unless another relation of the connection uses it
   * when its turn comes: a registration of the same room that was queued before (its relation is
   * bound once Kuzzle answers) keeps it.
   */
  private unsubscribe(subscription: Subscription): void {
    const endpoint = this.endpoints.byConnection(subscription.connectionId);
    if (endpoint === undefined) return; // the connection is gone, and its subscriptions with it
    const data: Record<string, unknown> = { controller: 'realtime', action: 'unsubscribe', body: { roomId: subscription.roomId } };
    if (subscription.jwt !== undefined) data.jwt = subscription.jwt;
    this.inOrder(endpoint, data, (response) => {
      if (response.status !== 200) {
        this.log.debug(`[${this.protocol}] unsubscribe of room ${subscription.roomId} answered ${response.status}`);
      }
    }, () => !this.subscriptions.roomInUse(subscription.connectionId, subscription.roomId));
  }
}
