'use strict';
// Scenario 2: memory. In a plugin process with --expose-gc (hostDouble entry
// point), heapUsed after gc():
// - per idle endpoint: N endpoints each send one request; measured once the
//   deduplication entries of those requests expired (lifetime set to 1 s here,
//   so the figure is the endpoint's own cost), and right after (with them);
// - per observe relation: R relations registered over E of those endpoints;
// - the deduplication store after a run at full load with the default
//   configuration, against its configured bounds, and what it really costs.
const path = require('node:path');
const { spawnChild } = require('../lib/procs');
const { sleep } = require('../lib/util');

const PLUGIN = path.join(__dirname, '..', 'servers', 'plugin.js');
const NOW = ['api', 'server', 'now'];
const OBSERVE_QUERY = ['index=bench', 'collection=memory'];
const WARMUP_ENDPOINTS = 50;
const DEDUP_EXPIRY_WAIT_MS = 2600; // 1 s lifetime + the 1 s sweep period, with margin

const perUnit = (after, before, count) => (count > 0 ? Math.round((after - before) / count) : null);

/** What grew between two heapByType() snapshots, per unit, largest first. */
function heapDiff(before, after, count, top = 12) {
  const rows = [];
  for (const [kind, { count: n, bytes }] of Object.entries(after)) {
    const was = before[kind] ?? { count: 0, bytes: 0 };
    rows.push({ kind, bytesPerUnit: Math.round(((bytes - was.bytes) / count) * 10) / 10, objectsPerUnit: Math.round(((n - was.count) / count) * 100) / 100 });
  }
  return rows.sort((a, b) => b.bytesPerUnit - a.bytesPerUnit).slice(0, top);
}

async function idleAndRelations({ agent, params, progress, cpu }) {
  const server = await spawnChild(PLUGIN, [JSON.stringify({ entry: 'double', coap: { deduplication: { lifetimeMs: 1000 } } })],
    { execArgv: ['--expose-gc'], name: 'plugin server (memory)', cpu });
  try {
    const port = server.info.port;
    await agent.call('closeFleet');
    // Warm-up on endpoints that are not measured: JIT code is heap too.
    await agent.call('coapLoad', { port, path: NOW, sockets: 4, window: 4, maxRequests: params.quick ? 2000 : 5000, drainMs: 2000 });
    await agent.call('idleEndpoints', { port, offset: 0, count: WARMUP_ENDPOINTS, path: NOW });
    await agent.call('observe', { port, offset: 0, endpoints: WARMUP_ENDPOINTS, perEndpoint: 4, query: OBSERVE_QUERY });
    await sleep(DEDUP_EXPIRY_WAIT_MS);
    const h0 = await server.call('heap');
    const types0 = params.heapDetail ? await server.call('heapByType') : null;

    const idle = await agent.call('idleEndpoints', { port, offset: WARMUP_ENDPOINTS, count: params.idleEndpoints, path: NOW }, 300000);
    const h1a = await server.call('heap');
    const statsIdle = await server.call('stats');
    await sleep(DEDUP_EXPIRY_WAIT_MS);
    const h1 = await server.call('heap');
    const types1 = params.heapDetail ? await server.call('heapByType') : null;
    progress(`  ${idle.ok}/${params.idleEndpoints} idle endpoints answered in ${idle.ms} ms; ${perUnit(h1.heapUsed, h0.heapUsed, idle.ok)} B heap each`);

    const relationCount = params.relationEndpoints * params.relationsPerEndpoint;
    const observed = await agent.call('observe', {
      port, offset: WARMUP_ENDPOINTS, endpoints: params.relationEndpoints, perEndpoint: params.relationsPerEndpoint, query: OBSERVE_QUERY,
    }, 600000);
    const h2a = await server.call('heap');
    await sleep(DEDUP_EXPIRY_WAIT_MS);
    const h2 = await server.call('heap');
    const statsRelations = await server.call('stats');
    const types2 = params.heapDetail ? await server.call('heapByType') : null;
    const registered = observed.registered;
    progress(`  ${registered}/${relationCount} observe relations registered in ${observed.ms} ms; ${perUnit(h2.heapUsed, h1.heapUsed, registered)} B heap each`);
    await agent.call('closeFleet');
    return {
      idleEndpoints: {
        endpoints: idle.ok,
        connections: statsIdle.connections,
        heapPerEndpoint: perUnit(h1.heapUsed, h0.heapUsed, idle.ok),
        heapPerEndpointWithDedup: perUnit(h1a.heapUsed, h0.heapUsed, idle.ok),
        arrayBuffersPerEndpoint: perUnit(h1.arrayBuffers, h0.arrayBuffers, idle.ok),
        dedupEntriesRightAfter: statsIdle.transport.deduplication,
        heapBytes: { before: h0.heapUsed, rightAfter: h1a.heapUsed, afterDedupExpiry: h1.heapUsed },
        byType: types1 ? heapDiff(types0, types1, idle.ok) : undefined,
      },
      relations: {
        requested: relationCount,
        registered,
        endpoints: params.relationEndpoints,
        codes: observed.codes,
        serverRelations: statsRelations.transport.observe.relations,
        heapPerRelation: perUnit(h2.heapUsed, h1.heapUsed, registered),
        heapPerRelationWithDedup: perUnit(h2a.heapUsed, h1.heapUsed, registered),
        arrayBuffersPerRelation: perUnit(h2.arrayBuffers, h1.arrayBuffers, registered),
        heapBytes: { before: h1.heapUsed, rightAfter: h2a.heapUsed, afterDedupExpiry: h2.heapUsed },
        byType: types2 ? heapDiff(types1, types2, registered) : undefined,
      },
    };
  } finally {
    await agent.call('closeFleet').catch(() => {});
    await server.stop();
  }
}

async function dedupUnderLoad({ agent, params, progress, cpu }) {
  const server = await spawnChild(PLUGIN, [JSON.stringify({ entry: 'double' })], { execArgv: ['--expose-gc'], name: 'plugin server (dedup)', cpu });
  try {
    const port = server.info.port;
    await agent.call('coapLoad', { port, path: NOW, sockets: 4, window: 4, maxRequests: 2000 });
    const h0 = await server.call('heap');
    const types0 = params.heapDetail ? await server.call('heapByType') : null;
    const before = (await server.call('stats')).transport.deduplication;
    const load = await agent.call('coapLoad', { port, path: NOW, sockets: params.sockets, window: params.window, durationMs: params.dedupMs, drainMs: 3000 }, params.dedupMs + 60000);
    const h1 = await server.call('heap');
    const stats = (await server.call('stats')).transport.deduplication;
    const types1 = params.heapDetail ? await server.call('heapByType') : null;
    const bound = { maxEntries: 100000, maxBytes: 16 * 1024 * 1024, lifetimeMs: 247000 }; // README defaults, used by this server
    const realBytes = h1.heapUsed - h0.heapUsed + (h1.arrayBuffers - h0.arrayBuffers);
    const added = stats.entries - before.entries;
    progress(`  dedup after ${params.dedupMs} ms at ${load.rps} req/s: ${stats.entries} entries, ${stats.bytes} B accounted, ${realBytes} B real (heap + buffers)`);
    return {
      durationMs: params.dedupMs,
      requests: load.completed,
      rps: load.rps,
      ...stats,
      bound,
      withinBound: stats.entries <= bound.maxEntries && stats.bytes <= bound.maxBytes,
      accountedBytesPerEntry: stats.entries ? Math.round(stats.bytes / stats.entries) : null,
      realBytes,
      realHeapBytes: h1.heapUsed - h0.heapUsed,
      realBufferBytes: h1.arrayBuffers - h0.arrayBuffers,
      realBytesPerEntry: added > 0 ? Math.round(realBytes / added) : null,
      realWithinByteBound: realBytes <= bound.maxBytes,
      byType: types1 ? heapDiff(types0, types1, stats.entries - before.entries) : undefined,
    };
  } finally {
    await server.stop();
  }
}

async function memory(ctx) {
  const endpoints = await idleAndRelations(ctx);
  const dedup = await dedupUnderLoad(ctx);
  return { ...endpoints, dedup };
}

module.exports = { memory };
