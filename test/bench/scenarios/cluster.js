'use strict';
// Scenario 9: the plugin in a real 3-node Kuzzle 2.56 cluster (test/kuzzle-host/cluster: a network
// namespace per node, nginx in front on 127.0.0.1; root). One cluster for the scenario:
// 1. req/s of POST /api/server/now through nginx, one upstream node (a second nginx beside the
//    cluster's, node A only) against three (the cluster's nginx); the throughput scenario's
//    closed-loop load, interleaved rounds, medians. Server CPU is the three nodes' together.
// 2. fan-out across nodes: `clusterRelations` observe relations (one per endpoint) on the
//    realtime subscription of one collection, first all on node A ("single"), then a third on
//    each node ("spread"); the devices reach the nodes directly (no nginx: 10,000 sessions would
//    need its worker_connections raised, and its one worker would be in the path). The same
//    filters on one node share one Kuzzle room. One document is written over HTTP on node B each
//    time, so that the single case is a cross-node notification too: time from the write until
//    the last notification arrived (agent and bench read the same clock), median of
//    `clusterWrites` writes after a warm-up one. One warm-up plus three writes is what the
//    plugin's NON pacing lets an endpoint get at once (a bucket of 4), as in the fan-out scenario.
//    Between the cases every relation is deregistered (GET + Observe: 1), and the rooms are seen
//    empty on every node.
// RSS per node (Kuzzle and its ID card renewer) before the relations and with each set.
const { startKuzzleCluster } = require('../../kuzzle-host/cluster');
const { startBalancer, nginxGroupPids } = require('../../kuzzle-host/cluster/balancer');
const { clock } = require('../lib/exchanges');
const { measuredRun, interleavedRounds, roundsSummary, cpuOf } = require('../lib/loadRounds');
const { median, sleep } = require('../lib/util');

const INDEX = 'bench';
const COLLECTION = 'fanout';
const QUERY = [`index=${INDEX}`, `collection=${COLLECTION}`];
const NOW = ['api', 'server', 'now'];
const NOTIFY_TIMEOUT_MS = 20000;
const WARMUP_TRIES = 5;
const round1 = (ms) => Math.round(ms * 10) / 10;
const mb = (bytes) => Math.round(bytes / 104857.6) / 10;

/** Subscribers of the collection in the cluster's full state, as a node sees it (what realtime:list reads). */
async function subscribers(node) {
  const rooms = (await node.ask('cluster:realtime:room:list'))?.[INDEX]?.[COLLECTION] ?? {};
  return Object.values(rooms).reduce((sum, count) => sum + count, 0);
}

/** Waits until every node counts `expected` subscribers on the collection. */
async function waitForSubscribers(cluster, expected, ms = 60000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const counts = await Promise.all(cluster.nodes.map(subscribers));
    if (counts.every((count) => count === expected)) return;
    if (Date.now() > deadline) throw new Error(`the nodes count ${counts.join(', ')} subscribers, not ${expected}`);
    await sleep(200);
  }
}

/** document:create over HTTP on `node`. */
async function writeDocument(node, body) {
  const response = await fetch(`${node.httpUrl}/${INDEX}/${COLLECTION}/_create`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body), signal: AbortSignal.timeout(10000),
  });
  if (!response.ok) throw new Error(`document:create on node ${node.index}: ${response.status} ${await response.text()}`);
}

/**
 * One write on `writer`, timed until each of `expected` relations was notified (or the timeout);
 * `lastByNode`: the last notification of the relations of each node.
 */
async function timedWrite({ agent, cluster }, writer, expected, body) {
  await agent.call('arm', { expected, timeoutMs: NOTIFY_TIMEOUT_MS });
  const t0 = clock();
  await writeDocument(writer, body);
  const answered = clock();
  const got = await agent.call('notifications', {}, NOTIFY_TIMEOUT_MS + 5000);
  const since = (t) => (t > 0 ? round1(t - t0) : null);
  return {
    answeredMs: round1(answered - t0),
    firstMs: since(got.first),
    lastMs: since(got.last),
    lastByNode: cluster.nodes.map((n) => since(got.lastByServer[n.address] ?? 0)),
    received: got.count,
    relations: got.relations,
    cons: got.cons,
  };
}

/**
 * One fan-out case: `placement` ([{node, count}]) relations registered, then writes on `writer`;
 * every relation deregistered at the end.
 */
async function fanoutCase(ctx, name, placement, writer) {
  const { agent, cluster, params, progress } = ctx;
  const expected = placement.reduce((sum, p) => sum + p.count, 0);
  const began = Date.now();
  let offset = 0;
  let registered = 0;
  try {
    for (const { node, count } of placement) {
      const observed = await agent.call('observe', { host: node.coapHost, port: node.coapPort, offset, endpoints: count, perEndpoint: 1, query: QUERY }, 600000);
      offset += count;
      registered += observed.registered;
      if (observed.registered !== count) throw new Error(`${name}: ${observed.registered}/${count} relations registered on node ${node.index} (${JSON.stringify(observed.codes)}, ${observed.failed} unanswered)`);
    }
    const registerMs = Date.now() - began;
    await waitForSubscribers(cluster, expected);
    progress(`  ${name}: ${registered} relations (${placement.map((p) => `${p.count} on node ${p.node.index}`).join(', ')}) in ${registerMs} ms, seen by every node after ${Date.now() - began} ms`);
    const memory = cluster.memory();

    // Warm-up: a room known to every node is not yet in every notifier (test/e2e/cluster.test.js): again until all are notified.
    let warmup;
    let tries = 0;
    do {
      if (tries > 0) await sleep(500);
      warmup = await timedWrite(ctx, writer, expected, { case: name, warmup: ++tries });
    } while (warmup.relations < expected && tries < WARMUP_TRIES);
    progress(`  ${name} warm-up (${tries} write${tries > 1 ? 's' : ''}): ${warmup.relations}/${expected} notified, last after ${warmup.lastMs} ms`);

    const writes = [];
    for (let i = 1; i <= params.clusterWrites; i++) {
      await sleep(200);
      const write = await timedWrite(ctx, writer, expected, { case: name, seq: i });
      writes.push(write);
      progress(`  ${name} write ${i} on node ${writer.index}: answered after ${write.answeredMs} ms, ${write.received} notifications (${write.cons} CON), first after ${write.firstMs} ms, last after ${write.lastMs} ms (A / B / C: ${write.lastByNode.map((ms) => ms ?? '-').join(' / ')})`);
    }
    // Devices leave as devices do; Kuzzle's rooms must be empty before the next case.
    const left = await agent.call('deregister', { query: QUERY }, 600000);
    if (left.ok !== registered) throw new Error(`${name}: ${left.ok}/${registered} deregistrations answered`);
    await waitForSubscribers(cluster, 0);
    return {
      relations: registered,
      placement: placement.map((p) => ({ node: p.node.index, relations: p.count })),
      writer: writer.index,
      registerMs,
      lastMs: median(writes.map((w) => w.lastMs)),
      firstMs: median(writes.map((w) => w.firstMs)),
      lastByNode: cluster.nodes.map((_, i) => median(writes.map((w) => w.lastByNode[i]))),
      answeredMs: median(writes.map((w) => w.answeredMs)),
      received: Math.min(...writes.map((w) => w.relations)),
      deregisterMs: left.ms,
      warmupWrites: tries,
      cold: warmup,
      writes,
      rssMb: memory.nodes.map(mb),
    };
  } finally {
    await agent.call('closeFleet').catch(() => {});
  }
}

/** req/s through nginx to one node against three, the same load as the throughput scenario. */
async function balancedThroughput({ agent, cluster, params, progress }) {
  const [a] = cluster.nodes;
  const one = await startBalancer({
    net: cluster.network,
    nodes: [{ address: a.address, coapPort: a.coapPort, httpPort: a.httpPort }],
    bindAddress: cluster.balancer.address, // the cluster's nginx already added it
  });
  try {
    const nodePids = cluster.nodes.map((n) => n.pid);
    const targets = [
      { id: 'nginx-1-node', label: 'nginx → node A', port: one.coapPort, nginx: nginxGroupPids(one.pid) },
      { id: 'nginx-3-nodes', label: 'nginx → nodes A, B, C', port: cluster.balancer.coapPort, nginx: nginxGroupPids(cluster.balancer.pid) },
    ];
    const run = async (target, { sockets, window, durationMs }) => {
      const before = [...nodePids.map((pid) => cpuOf(pid)), cpuOf(target.nginx)];
      const result = await measuredRun(nodePids, () => agent.call('coapLoad', { port: target.port, path: NOW, sockets, window, durationMs, drainMs: 3000 }));
      // Each node's and nginx's share of a core: how the load spread, and the balancer's own cost.
      const shares = [...nodePids.map((pid) => cpuOf(pid)), cpuOf(target.nginx)]
        .map((after, i) => (after === null || before[i] === null ? null : Math.round(((after - before[i]) / (result.elapsedMs / 1000)) * 100) / 100));
      result.nodeCpu = shares.slice(0, -1);
      result.nginxCpu = shares.at(-1);
      return result;
    };
    const runs = await interleavedRounds(targets, run, params, progress);
    return targets.map((target) => {
      const rounds = runs.get(target.id);
      return {
        id: target.id,
        label: target.label,
        ...roundsSummary(rounds),
        nodeCpu: nodePids.map((_, i) => median(rounds.map((r) => r.nodeCpu[i]))),
        nginxCpu: median(rounds.map((r) => r.nginxCpu)),
      };
    });
  } finally {
    await one.stop();
  }
}

async function cluster(ctx) {
  const { agent, params, progress } = ctx;
  const began = Date.now();
  // No watchdog: a node slowed by 10,000 registrations on a busy 2-core machine is not a hung one.
  const kuzzleCluster = await startKuzzleCluster({ nodes: 3, balancer: 'nginx', watchdog: false, logLevel: 'warn' });
  try {
    const [a, b, c] = kuzzleCluster.nodes;
    progress(`  3-node cluster up in ${kuzzleCluster.bootMs} ms (${kuzzleCluster.network.tag}): nodes ${kuzzleCluster.nodes.map((n) => n.address).join(', ')}, nginx CoAP 127.0.0.1:${kuzzleCluster.balancer.coapPort}`);
    await a.query({ controller: 'index', action: 'create', index: INDEX });
    await a.query({ controller: 'collection', action: 'create', index: INDEX, collection: COLLECTION });
    const scoped = { ...ctx, cluster: kuzzleCluster };

    const throughput = await balancedThroughput(scoped);

    const idleRssMb = kuzzleCluster.memory().nodes.map(mb);
    await agent.call('closeFleet');
    const total = params.clusterRelations;
    const single = await fanoutCase(scoped, 'single', [{ node: a, count: total }], b);
    const third = Math.floor(total / 3);
    const spread = await fanoutCase(scoped, 'spread', [{ node: a, count: total - 2 * third }, { node: b, count: third }, { node: c, count: third }], b);
    return { throughput, fanout: { single, spread }, idleRssMb, bootMs: kuzzleCluster.bootMs, elapsedMs: Date.now() - began };
  } finally {
    await agent.call('closeFleet').catch(() => {});
    await kuzzleCluster.stop();
  }
}

module.exports = { cluster };
