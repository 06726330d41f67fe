'use strict';

// The Kuzzle process of a host: index.js (and cluster/node.js, once per node) forks this file, which runs one
// Kuzzle 2.56 `Backend` and talks to its parent over IPC (the parent's side: childIpc.js):
//   parent -> child  {type:'start', options}, {type:'query'|'ask'|'coapStats', id, ...}
//   child -> parent  {type:'ready', ...} | {type:'failed', error}, {type:'reply', id, result|error}
// Stopping: SIGTERM (Kuzzle's own handler shuts down gracefully and exits).

const path = require('node:path');
const { freeTcpPort } = require('./redis');

const kuzzleDir = path.dirname(require.resolve('kuzzle/package.json'));
const fromKuzzle = (name) => require(require.resolve(name, { paths: [kuzzleDir] }));
const _ = fromKuzzle('lodash');
const rc = fromKuzzle('rc');

const serializeError = (e) => ({ message: e?.message ?? String(e), id: e?.id, code: e?.code, status: e?.status, stack: e?.stack });

/*
 * Single-node realtime state. With `cluster.enabled: false`, nothing answers
 * the events the realtime core sends to the cluster module
 * (lib/core/realtime/hotelClerk.js, lib/api/controllers/realtimeController.js):
 * subscribe fails on `core:realtime:room:create:after`. This mirrors what
 * lib/cluster/node.js + lib/cluster/state.js do for one node: keep rooms and
 * subscriber counts (realtime:count, realtime:list) and drop a room from
 * Koncorde when its last subscriber leaves.
 */
function registerSingleNodeRealtime(kuzzle) {
  const rooms = new Map(); // roomId -> { index, collection, count }
  kuzzle.onCall('core:realtime:room:create:after', (normalized) => {
    const [index, collection] = normalized.index.split('/'); // Koncorde index "<index>/<collection>"
    if (!rooms.has(normalized.id)) rooms.set(normalized.id, { index, collection, count: 0 });
  });
  kuzzle.onCall('core:realtime:subscribe:after', (roomId) => {
    const room = rooms.get(roomId);
    if (room) room.count++;
  });
  kuzzle.onCall('core:realtime:unsubscribe:after', (roomId) => {
    const room = rooms.get(roomId);
    if (room) room.count--;
  });
  kuzzle.onAsk('cluster:realtime:room:remove', (roomId) => {
    const room = rooms.get(roomId);
    if (!room) return;
    rooms.delete(roomId);
    kuzzle.koncorde.remove(roomId, `${room.index}/${room.collection}`);
  });
  kuzzle.onAsk('cluster:realtime:room:count', (roomId) => rooms.get(roomId)?.count ?? 0);
  kuzzle.onAsk('cluster:realtime:room:list', () => {
    const list = {};
    for (const [id, { index, collection, count }] of rooms) _.set(list, [index, collection, id], count);
    return list;
  });
  // realtime:join on a room this node does not have: there is no other node to ask.
  kuzzle.onAsk('cluster:realtime:filters:get', () => null);
}

async function start(options) {
  const began = Date.now();
  // What the user configured the Kuzzle way (.kuzzlerc files, kuzzle_* env
  // variables): our defaults only fill what is absent from it.
  const user = rc('kuzzle', {});
  const isUserSet = (p) => _.get(user, p) !== undefined;

  // server.appLogs.level: the logger is created with the Backend, so the
  // level must be in the configuration (here: the env) before.
  if (options.logLevel) process.env.kuzzle_server__appLogs__level = options.logLevel;

  const { Backend } = require('kuzzle');
  const app = new Backend(options.appName || 'kuzzle-coap-host');
  const config = app.config.content;
  const setDefault = (p, value) => {
    if (!isUserSet(p)) _.set(config, p, value);
  };

  // Precedence: explicit options > user configuration > options.defaults > generated.
  // options.cluster (cluster/: one node of a multi-node cluster) is merged over Kuzzle's cluster section.
  if (options.cluster) _.merge(config.cluster, options.cluster);
  else setDefault('cluster.enabled', false);
  if (options.port !== undefined) config.server.port = options.port;
  else if (!isUserSet('server.port')) config.server.port = options.defaults?.port ?? await freeTcpPort();

  const coapDefaults = { host: '127.0.0.1', ...options.defaults?.coap };
  for (const [key, value] of Object.entries(coapDefaults)) setDefault(['server', 'protocols', 'coap', key], value);
  const coap = Object.assign(config.server.protocols.coap, options.coap);
  // Port 0: the plugin binds a free port itself (no window for another process to take it);
  // the port it got is read back from the plugin once Kuzzle is up.
  if (coap.port === undefined) coap.port = 0;
  if (coap.coaps?.enabled && coap.coaps.port === undefined) coap.coaps = { ...coap.coaps, port: 0 };
  // Kuzzle links a connection to its token (TokenExpired notification) only
  // for the protocols whose section says `enabled && realtimeNotifications`
  // (config/index.js, computed at load time). The plugin's own configuration
  // check may refuse these two keys, so the host lists "coap" directly.
  const notifiable = config.internal.notifiableProtocols;
  if (coap.enabled !== false && coap.realtimeNotifications !== false && !notifiable.includes('coap')) {
    notifiable.push('coap');
  }

  const { redis } = options;
  for (const service of ['internalCache', 'memoryStorage']) {
    config.services[service].node = { host: redis.host, port: redis.port };
    if (redis.password) config.services[service].options = { ...config.services[service].options, password: redis.password };
  }

  if (options.elasticsearchUrl) {
    config.services.storageEngine.client.node = options.elasticsearchUrl;
  } else {
    const { createMemoryElasticsearch } = require('./memory-elasticsearch');
    config.services.storageEngine.majorVersion = '7';
    config.services.storageEngine.client.Connection = createMemoryElasticsearch().Connection;
  }

  if (!config.cluster.enabled) {
    // Registered once the core is up and before any listener opens: the
    // Kuzzle object does not exist before start(), and after start() clients
    // could already subscribe.
    app.pipe.register('kuzzle:state:live', async (payload) => {
      registerSingleNodeRealtime(global.kuzzle);
      return payload;
    });
  }

  if (options.appSetup) {
    // A module of the tests that registers controllers, plugins or pipes on the Backend before start.
    const setup = require(options.appSetup);
    await (typeof setup === 'function' ? setup : setup.appSetup)(app);
  }

  await app.start();

  process.on('message', async (message) => {
    if (message?.type !== 'query' && message?.type !== 'ask' && message?.type !== 'coapStats') return;
    try {
      const result = message.type === 'query'
        ? await app.sdk.query(message.request)
        : message.type === 'coapStats'
          ? global.kuzzle.entryPoint.protocols.get('coap').stats()
          : await global.kuzzle.ask(message.event, ...(message.args || []));
      process.send({ type: 'reply', id: message.id, result });
    } catch (error) {
      process.send({ type: 'reply', id: message.id, error: serializeError(error) });
    }
  });

  await global.kuzzle.log.flush?.(); // pino writes from a worker: let the boot logs out first
  process.send({
    type: 'ready',
    bootMs: Date.now() - began,
    httpPort: config.server.port,
    // The port the plugin bound (port 0 asks it for a free one); null when the plugin is not loaded.
    coapPort: global.kuzzle.entryPoint.protocols.get('coap')?.listening?.port ?? null,
    coapsPort: global.kuzzle.entryPoint.protocols.get('coap')?.listeningSecure?.port ?? null,
    coapHost: coap.host,
    coapConfig: coap,
    protocols: [...global.kuzzle.entryPoint.protocols.keys()],
    storage: options.elasticsearchUrl || 'memory',
  });
}

// Only as a host's fork (Node 20's `node --test test/` also runs this file).
if (process.send) {
  // The parent is gone (even SIGKILLed): do not outlive it.
  process.on('disconnect', () => process.exit(1));
  process.once('message', (message) => {
    if (message?.type !== 'start') return;
    start(message.options).catch((error) => {
      process.send({ type: 'failed', error: serializeError(error) }, () => process.exit(1));
    });
  });
}
