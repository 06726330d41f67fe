'use strict';
// Scenario 1: request throughput and latency of every server under test, in
// interleaved rounds (the median of the rounds is reported), with the same
// closed-loop load: `sockets` endpoints × `window` CON requests in flight, or
// as many keep-alive HTTP connections with one request each.
const path = require('node:path');
const { spawnChild } = require('../lib/procs');
const { measuredRun, interleavedRounds, roundsSummary } = require('../lib/loadRounds');

const SERVERS = path.join(__dirname, '..', 'servers');
const NOW = { path: ['api', 'server', 'now'] };
const DOC = { temperature: 21.5, humidity: 40, device: 'bench-sensor' };
const createCoap = (kuzzle) => ({ path: ['api', 'document', 'create'], query: [`index=${kuzzle.index}`, `collection=${kuzzle.collection}`], payloadKind: 'cbor', payloadJson: DOC });
const createHttp = (kuzzle) => ({ request: { controller: 'document', action: 'create', index: kuzzle.index, collection: kuzzle.collection, body: DOC } });

async function startServers({ quick, cpu }) {
  const started = {
    limit: spawnChild(path.join(SERVERS, 'limit.js'), [], { name: 'limit server', cpu }),
    nodeCoap: spawnChild(path.join(SERVERS, 'nodeCoap.js'), [], { name: 'node-coap server', cpu }),
    plugin: spawnChild(path.join(SERVERS, 'plugin.js'), [JSON.stringify({ entry: 'minimal' })], { name: 'plugin server', cpu }),
    double: quick ? null : spawnChild(path.join(SERVERS, 'plugin.js'), [JSON.stringify({ entry: 'double' })], { name: 'plugin+double server', cpu }),
  };
  const out = {};
  for (const [key, promise] of Object.entries(started)) out[key] = await promise;
  return out;
}

function targetsFor(servers, kuzzle) {
  const targets = [
    { id: 'limit', label: '(a) limit: dgram + coap-packet', kind: 'coap', port: servers.limit.info.port, pid: servers.limit.pid, ...NOW },
    { id: 'node-coap', label: '(b) node-coap createServer', kind: 'coap', port: servers.nodeCoap.info.port, pid: servers.nodeCoap.pid, ...NOW },
    { id: 'plugin', label: '(c) plugin, minimal entry point', kind: 'coap', port: servers.plugin.info.port, pid: servers.plugin.pid, server: servers.plugin, ...NOW },
  ];
  if (servers.double) {
    targets.push({ id: 'plugin+double', label: '(c) plugin + hostDouble', kind: 'coap', port: servers.double.info.port, pid: servers.double.pid, server: servers.double, ...NOW });
  }
  if (kuzzle) {
    const k = { pid: kuzzle.host.kuzzle.pid };
    targets.push(
      { id: 'kuzzle-coap-now', label: '(d) Kuzzle CoAP server:now', kind: 'coap', port: kuzzle.host.coapPort, ...k, ...NOW },
      { id: 'kuzzle-http-now', label: '(d) Kuzzle HTTP server:now', kind: 'http', port: kuzzle.host.httpPort, ...k, request: { controller: 'server', action: 'now' } },
      { id: 'kuzzle-coap-create', label: '(d) Kuzzle CoAP document:create', kind: 'coap', port: kuzzle.host.coapPort, ...k, ...createCoap(kuzzle) },
      { id: 'kuzzle-http-create', label: '(d) Kuzzle HTTP document:create', kind: 'http', port: kuzzle.host.httpPort, ...k, ...createHttp(kuzzle) },
    );
  }
  return targets;
}

/** One timed run of the agent's load generator against a target, with the server's CPU use. */
async function runOnce(agent, target, { sockets, window, durationMs }) {
  const result = await measuredRun(target.pid, () => (target.kind === 'coap'
    ? agent.call('coapLoad', { port: target.port, path: target.path, query: target.query, payloadKind: target.payloadKind, payloadJson: target.payloadJson, sockets, window, durationMs, drainMs: 3000 })
    : agent.call('httpLoad', { port: target.port, request: target.request, concurrency: sockets * window, durationMs, drainMs: 3000 })));
  // The plugin's deduplication store after the run: it fills up to its bound within seconds at full load.
  if (target.server) result.dedup = (await target.server.call('stats')).transport.deduplication;
  return result;
}

/**
 * @returns {Promise<{params, targets: Array<{id, label, rps, p50, p99, rounds}>}>}
 */
async function throughput({ agent, kuzzle, quick, cpu = null, params, progress }) {
  const servers = await startServers({ quick, cpu });
  try {
    const targets = targetsFor(servers, kuzzle);
    // The warm-up runs: JIT, Kuzzle's caches, the collection's first documents.
    const rounds = await interleavedRounds(targets, (target, p) => runOnce(agent, target, p), params, progress);
    return {
      params,
      targets: targets.map((target) => ({ id: target.id, label: target.label, ...roundsSummary(rounds.get(target.id)) })),
    };
  } finally {
    await Promise.all(Object.values(servers).filter(Boolean).map((s) => s.stop()));
  }
}

module.exports = { throughput };
