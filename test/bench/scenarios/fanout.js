'use strict';
// Scenario 3: notification fan-out. R observe relations (one per endpoint)
// on one Kuzzle channel (hostDouble's realtime), then broadcasts: the time
// from the broadcast call until the last notification left the server's
// socket (send callbacks, server side) and until the last one was received
// (client side; both processes read the same wall clock). One warm-up
// broadcast, then `broadcasts` measured ones: the median is reported.
const path = require('node:path');
const { spawnChild } = require('../lib/procs');
const { median, sleep } = require('../lib/util');

const PLUGIN = path.join(__dirname, '..', 'servers', 'plugin.js');
const round = (ms) => Math.round(ms * 10) / 10;

async function fanout({ agent, params, progress, cpu }) {
  const server = await spawnChild(PLUGIN, [JSON.stringify({ entry: 'double', trackSends: true })], { name: 'plugin server (fan-out)', cpu });
  try {
    const port = server.info.port;
    await agent.call('closeFleet');
    const observed = await agent.call('observe', {
      port, endpoints: params.fanoutEndpoints, perEndpoint: params.fanoutRelations / params.fanoutEndpoints, query: ['index=bench', 'collection=fanout'],
    }, 300000);
    const relations = observed.registered;
    progress(`  ${relations} relations registered in ${observed.ms} ms`);
    const runs = [];
    for (let i = 0; i <= params.broadcasts; i++) {
      await agent.call('arm', { expected: relations, timeoutMs: 10000 });
      const sent = await server.call('publish', { index: 'bench', collection: 'fanout', expected: relations, timeoutMs: 10000 });
      const received = await agent.call('notifications', {}, 20000);
      const run = {
        warmup: i === 0,
        syncMs: round(sent.tReturned - sent.t0),
        lastSentMs: round(sent.tLastSent - sent.t0),
        firstReceivedMs: round(received.first - sent.t0),
        lastReceivedMs: round(received.last - sent.t0),
        sent: sent.sent,
        received: received.count,
        relationsNotified: received.relations,
      };
      runs.push(run);
      progress(`  broadcast ${i === 0 ? 'warm-up' : i}: sent ${run.sent} (last after ${run.lastSentMs} ms, call returned after ${run.syncMs} ms), received ${run.received} (last after ${run.lastReceivedMs} ms)`);
      await sleep(200);
    }
    const measured = runs.filter((r) => !r.warmup);
    const stats = await server.call('stats');
    return {
      relations,
      endpoints: params.fanoutEndpoints,
      lastSentMs: median(measured.map((r) => r.lastSentMs)),
      syncMs: median(measured.map((r) => r.syncMs)),
      lastReceivedMs: median(measured.map((r) => r.lastReceivedMs)),
      received: Math.min(...measured.map((r) => r.received)),
      cold: runs[0],
      runs,
      observe: stats.transport.observe,
    };
  } finally {
    await agent.call('closeFleet').catch(() => {});
    await server.stop();
  }
}

module.exports = { fanout };
