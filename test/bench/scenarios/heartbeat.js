'use strict';
// Scenario 7: the cost of liveness. R quiet observe relations (10 per endpoint, nothing
// published): each gets a CON 2.03 heartbeat after 1/2 to 3/4 of `observe.maxAge`, which its
// endpoint ACKs. Run with a short Max-Age so that a window of a few seconds sees thousands of
// them; the rate scales as 1/maxAge, which gives the figure at the default (120 s): CONs per
// second (plus as many ACKs), and the server's CPU time per heartbeat.
const path = require('node:path');
const { spawnChild } = require('../lib/procs');
const { sleep } = require('../lib/util');
const { DEFAULT_CONFIG } = require('../../../dist/config');

const PLUGIN = path.join(__dirname, '..', 'servers', 'plugin.js');
const MAX_AGE_S = 8;
const PER_ENDPOINT = 10;

async function heartbeat({ agent, params, progress, cpu }) {
  const coap = { observe: { maxAge: MAX_AGE_S, maxRelations: params.heartbeatRelations }, maxConnections: params.heartbeatRelations };
  const server = await spawnChild(PLUGIN, [JSON.stringify({ entry: 'double', coap })], { name: 'plugin server (heartbeat)', cpu });
  try {
    await agent.call('closeFleet');
    const endpoints = params.heartbeatRelations / PER_ENDPOINT;
    const observed = await agent.call('observe', {
      port: server.info.port, endpoints, perEndpoint: PER_ENDPOINT, query: ['index=bench', 'collection=quiet'],
    }, 600000);
    progress(`  ${observed.registered} quiet relations registered in ${observed.ms} ms; Max-Age ${MAX_AGE_S} s`);
    // Every relation's first heartbeat is due within 3/4 of Max-Age of its registration: wait that long, then measure.
    await sleep(MAX_AGE_S * 750 + 1000);
    const before = await server.call('stats');
    const cpuBefore = await server.call('cpu');
    const t0 = Date.now();
    await sleep(params.heartbeatWindowMs);
    const seconds = (Date.now() - t0) / 1000;
    const after = await server.call('stats');
    const cpuAfter = await server.call('cpu');
    const heartbeats = after.transport.observe.heartbeats - before.transport.observe.heartbeats;
    const cpuUs = (cpuAfter.user - cpuBefore.user) + (cpuAfter.system - cpuBefore.system);
    const perSecond = heartbeats / seconds;
    const scale = MAX_AGE_S / DEFAULT_CONFIG.observe.maxAge;
    const result = {
      relations: observed.registered,
      maxAgeS: MAX_AGE_S,
      seconds,
      heartbeats,
      perSecond,
      expectedPerSecond: observed.registered / (MAX_AGE_S * 0.625 + 0.5), // mean quiet time: 5/8 of Max-Age, plus half the 1 s sweep
      cpuUsPerHeartbeat: heartbeats > 0 ? cpuUs / heartbeats : null,
      cpuShare: cpuUs / (seconds * 1e6),
      relationsLeft: after.transport.observe.relations,
      ended: after.transport.observe.ended,
      atDefault: { maxAgeS: DEFAULT_CONFIG.observe.maxAge, consPerSecond: perSecond * scale, datagramsPerSecond: 2 * perSecond * scale, cpuShare: (cpuUs / (seconds * 1e6)) * scale },
    };
    progress(`  ${heartbeats} heartbeats in ${seconds.toFixed(1)} s: ${perSecond.toFixed(0)}/s (expected ~${result.expectedPerSecond.toFixed(0)}/s), ${result.cpuUsPerHeartbeat?.toFixed(1)} µs CPU each; at Max-Age ${DEFAULT_CONFIG.observe.maxAge} s: ${result.atDefault.consPerSecond.toFixed(0)} CON/s + as many ACKs`);
    return result;
  } finally {
    await agent.call('closeFleet').catch(() => {});
    await server.stop();
  }
}

module.exports = { heartbeat };
