'use strict';
/**
 * A test double of Kuzzle's side of the protocol contract (shared/seed/kuzzle-protocols-doc.md):
 * an entry point with `config`, `execute`, `newConnection`, `removeConnection`, and a context
 * with `ClientConnection`, `Request` (kuzzle-common-objects), `errors` and `log`.
 *
 * `form: 'seed'` gives `execute(request, cb)` and a context with Request, as the seed documents;
 * `form: 'kuzzle2'` gives `execute(connection, request, cb)` and no context.Request, as Kuzzle 2.56.
 * The double's "controllers" are a few fake actions; every execution is counted.
 */
const { randomUUID } = require('node:crypto');
const objects = require('kuzzle-common-objects');

const { Request, NotFoundError, BadRequestError, InternalError } = objects;
const ERRORS = Object.fromEntries(Object.entries(objects).filter(([name]) => name.endsWith('Error')));
const CoapProtocol = require('../../dist');

class ClientConnection {
  constructor(protocol, ips, headers = {}) {
    this.id = randomUUID();
    this.protocol = protocol;
    this.ips = ips;
    this.headers = headers;
    Object.freeze(this);
  }
}

/** A ~3 KB answer, like Kuzzle's server:info (exported: the tests compare with it). */
function bigResult() {
  const services = {};
  for (let i = 0; i < 60; i++) services[`service-${i}`] = { version: `7.${i}.0`, status: 'green', nodes: i };
  return { serverInfo: { kuzzle: { version: '2.56.0', services } } };
}

const ACTIONS = {
  'server:now': () => ({ now: Date.now() }),
  'server:info': bigResult,
  'test:echo': (request) => ({ body: request.input.body, args: request.input.args, jwt: request.input.jwt ?? null }),
  // `?size=<n>` adds an n-character filler, for a slow answer that takes several blocks.
  'test:slow': (request) => {
    const { ms, size } = request.input.args;
    const result = { waited: Number(ms), ...(size === undefined ? {} : { filler: 'x'.repeat(Number(size)) }) };
    return new Promise((resolve) => setTimeout(() => resolve(result), Number(ms)));
  },
  'test:partial': () => {
    // Kuzzle answers 206 when some parts of a multi-document action failed.
    const error = new InternalError('some documents failed');
    error.status = 206;
    throw error;
  },
  'document:get': (request) => {
    throw new NotFoundError(`Document "${request.input.resource._id}" not found`, 'services.storage.not_found');
  },
  'test:throw': () => {
    throw new BadRequestError('bad thing', 'api.assert.invalid_argument');
  },
  'my-plugin/sensors:read': () => ({ sensor: 'ok' }),
  // As Kuzzle's auth:login answers; `?expiresIn=<ms>` sets the token's lifetime (default 1 h), `?user=<kuid>` whose it is.
  'auth:login': (request) => {
    const ttl = Number(request.input.args.expiresIn ?? 3_600_000);
    return { _id: request.input.args.user ?? 'device-user', jwt: `jwt-${randomUUID()}`, expiresAt: Date.now() + ttl, ttl };
  },
  'auth:logout': () => ({}),
  // As Kuzzle's auth:refreshToken: a new token for the caller's (the old one stays valid a short grace period).
  'auth:refreshToken': (request) => {
    const ttl = Number(request.input.args.expiresIn ?? 3_600_000);
    return { _id: 'device-user', jwt: `jwt-${randomUUID()}`, expiresAt: Date.now() + ttl, ttl, refreshed: request.input.jwt ?? null };
  },
};

function startDouble({ form = 'seed', coap = {}, maxRequestSize = '1MB' } = {}) {
  const calls = new Map();
  const connections = new Map();
  const removed = [];
  const logs = [];

  // Realtime as Kuzzle does it: subscribe joins the connection to the room's channel before
  // answering; unsubscribe makes it leave; a publication is broadcast on the room's channel.
  const rooms = new Map();
  const realtimeActions = {
    'realtime:subscribe': (request) => {
      const { index, collection } = request.input.resource;
      const roomId = `room${JSON.stringify([index, collection, request.input.body ?? {}]).length}${index}${collection}`;
      const channel = `${roomId}-${request.input.args.scope ?? 'all'}`;
      if (!rooms.has(roomId)) rooms.set(roomId, { index, collection, filters: request.input.body ?? {}, channel, connections: new Set() });
      rooms.get(roomId).connections.add(request.context.connectionId);
      protocol.joinChannel(channel, request.context.connectionId);
      return { roomId, channel };
    },
    'realtime:unsubscribe': (request) => {
      const room = rooms.get(request.input.body.roomId);
      if (!room || !room.connections.delete(request.context.connectionId)) {
        throw new NotFoundError('not subscribed', 'core.realtime.not_subscribed');
      }
      protocol.leaveChannel(room.channel, request.context.connectionId);
      return { roomId: request.input.body.roomId };
    },
    'realtime:count': (request) => ({ count: rooms.get(request.input.body.roomId)?.connections.size ?? 0 }),
  };
  /** Broadcasts a document notification to the rooms of index/collection whose filter `match` accepts. */
  const publish = (index, collection, source, match = () => true) => {
    const channels = [...rooms.values()]
      .filter((room) => room.index === index && room.collection === collection && room.connections.size > 0 && match(room.filters, source))
      .map((room) => room.channel);
    const payload = {
      type: 'document', status: 200, action: 'create', scope: 'in', event: 'write', index, collection,
      controller: 'document', protocol: 'http', requestId: randomUUID(), timestamp: Date.now(), volatile: null,
      node: 'double', result: { _id: randomUUID(), _source: source, _version: 1 },
    };
    if (channels.length > 0) protocol.broadcast({ channels, payload });
    return channels;
  };
  const subscribers = (roomId) => rooms.get(roomId)?.connections.size ?? 0;

  const run = (request, callback) => {
    const name = `${request.input.controller}:${request.input.action}`;
    calls.set(name, (calls.get(name) ?? 0) + 1);
    const action = ACTIONS[name] ?? realtimeActions[name];
    const finish = (result, error) => {
      if (error) request.setError(error);
      else request.setResult(result, { status: 200 });
      const response = request.response.toJSON();
      if (response.content.error) delete response.content.error.stack;
      callback(response);
    };
    try {
      if (!action) throw new NotFoundError(`API action "${name}" not found`, 'api.process.action_not_found');
      Promise.resolve(action(request)).then((r) => finish(r), (e) => finish(null, e));
    } catch (error) {
      finish(null, error);
    }
  };

  const entryPoint = {
    config: { maxRequestSize, protocols: { coap: { host: '127.0.0.1', port: 0, ...coap } } },
    newConnection(connection) {
      connections.set(connection.id, connection);
    },
    removeConnection(id) {
      connections.delete(id);
      removed.push(id);
    },
    execute:
      form === 'seed'
        ? function execute(request, callback) {
            run(request, callback);
          }
        : function execute(connection, request, callback) {
            if (!connections.has(connection.id)) throw new Error('execute() with an unknown connection');
            run(request, callback);
          },
  };
  const log = {};
  for (const level of ['silly', 'debug', 'verbose', 'info', 'warn', 'error']) {
    log[level] = (message) => logs.push({ level, message: String(message) });
  }
  const context = { ClientConnection, log, errors: ERRORS };
  if (form === 'seed') context.Request = Request;

  const protocol = new CoapProtocol();
  return {
    protocol,
    entryPoint,
    context,
    calls,
    connections,
    removed,
    rooms,
    publish,
    subscribers,
    logs,
    async start() {
      await protocol.init(entryPoint, context);
      return protocol.listening.port;
    },
    stop: () => protocol.close(),
    /** The id of the (first) room subscribed on index/collection, or undefined. */
    roomIdOf(index, collection) {
      for (const [roomId, room] of rooms) if (room.index === index && room.collection === collection) return roomId;
      return undefined;
    },
    /** Kuzzle's hotelClerk.removeConnection: the connection leaves every room it subscribed to. */
    dropSubscriptions(connectionId) {
      for (const room of rooms.values()) {
        if (room.connections.delete(connectionId)) protocol.leaveChannel(room.channel, connectionId);
      }
    },
    /** Kuzzle's notifier.notifyTokenExpired: TokenExpired on the server channel, then its subscriptions go. */
    expireToken(connectionId) {
      protocol.notify({
        channels: ['kuzzle:notification:server'],
        connectionId,
        payload: { type: 'TokenExpired', status: 401, message: 'Authentication Token Expired' },
      });
      this.dropSubscriptions(connectionId);
    },
    /** From now on, removeConnection drops the connection's subscriptions, as Kuzzle does on 'connection:remove'. */
    dropSubscriptionsOnRemove() {
      const remove = entryPoint.removeConnection;
      entryPoint.removeConnection = (id) => {
        remove.call(entryPoint, id);
        this.dropSubscriptions(id);
      };
    },
  };
}

module.exports = { startDouble, ClientConnection, bigResult };
