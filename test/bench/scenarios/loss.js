'use strict';
// Scenario 4: loss. N CON requests, each creating one distinct document
// ({seq, run} body), through a proxy that drops 10% of the datagrams each way.
// The client retransmits as RFC 7252 says; the server must run every request
// exactly once: documents counted in Kuzzle (full run), or executions counted
// in the plugin's test double (quick run).
const path = require('node:path');
const { spawnChild } = require('../lib/procs');

const BENCH = path.join(__dirname, '..');

/** Documents of this run in the Kuzzle collection, by seq: once / duplicated / missing. */
async function countDocuments(kuzzle, collection, run, expected) {
  const response = await kuzzle.host.kuzzle.query({ controller: 'document', action: 'search', index: kuzzle.index, collection, size: 10000, body: {} });
  const result = response.result ?? response;
  const counts = new Map();
  for (const hit of result.hits) {
    if (hit._source.run !== run) continue;
    counts.set(hit._source.seq, (counts.get(hit._source.seq) ?? 0) + 1);
  }
  let once = 0, duplicated = 0, missing = 0;
  for (let seq = 0; seq < expected; seq++) {
    const n = counts.get(seq) ?? 0;
    if (n === 0) missing++;
    else if (n === 1) once++;
    else duplicated++;
  }
  return { expected, once, duplicated, missing, total: result.total };
}

async function loss({ agent, kuzzle, params, progress, cpu }) {
  const run = `run-${Date.now()}`;
  const useKuzzle = !params.quick && kuzzle !== null;
  let server = null;
  let target;
  if (useKuzzle) {
    const collection = 'loss';
    await kuzzle.host.kuzzle.query({ controller: 'collection', action: 'create', index: kuzzle.index, collection });
    target = { port: kuzzle.host.coapPort, path: ['api', 'document', 'create'], query: [`index=${kuzzle.index}`, `collection=${collection}`], collection };
  } else {
    server = await spawnChild(path.join(BENCH, 'servers', 'plugin.js'), [JSON.stringify({ entry: 'double' })], { name: 'plugin server (loss)', cpu });
    target = { port: server.info.port, path: ['api', 'server', 'now'] };
  }
  const proxy = await spawnChild(path.join(BENCH, 'proxy.js'), [JSON.stringify({ targetPort: target.port, dropRate: params.dropRate })], { name: 'lossy proxy' });
  try {
    const load = await agent.call('coapLoad', {
      port: proxy.info.port, path: target.path, query: target.query, payloadKind: 'seq', run,
      sockets: params.lossSockets, window: params.lossWindow, maxRequests: params.lossRequests,
      ackTimeoutMs: params.lossAckTimeoutMs, maxRetransmit: 4, drainMs: Infinity,
    }, 600000);
    const executions = useKuzzle
      ? await countDocuments(kuzzle, target.collection, run, params.lossRequests)
      : await server.call('executions', { expected: params.lossRequests });
    const dropped = await proxy.call('counts');
    const n = params.lossRequests;
    const pFail = (1 - (1 - params.dropRate) ** 2) ** 5; // one request unanswered after MAX_RETRANSMIT = 4
    progress(`  ${load.completed}/${n} answered, ${load.gaveUp} gave up, ${load.retransmissions} retransmissions, ${load.elapsedMs} ms; executed once ${executions.once}, twice+ ${executions.duplicated}, never ${executions.missing}`);
    return {
      where: useKuzzle ? 'Kuzzle document:create (documents counted)' : 'hostDouble server:now (executions counted)',
      requests: n,
      dropRate: params.dropRate,
      ackTimeoutMs: params.lossAckTimeoutMs,
      inFlight: params.lossSockets * params.lossWindow,
      answered: load.completed,
      gaveUp: load.gaveUp,
      expectedGaveUp: Math.round(n * pFail * 100) / 100,
      retransmissions: load.retransmissions,
      emptyAcks: load.emptyAcks,
      separate: load.separate,
      elapsedMs: load.elapsedMs,
      latencyMs: load.latencyMs,
      executions,
      exactlyOnce: executions.once === n && executions.duplicated === 0 && executions.missing === 0,
      proxy: dropped,
    };
  } finally {
    await proxy.stop();
    await server?.stop();
  }
}

module.exports = { loss };
