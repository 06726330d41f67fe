'use strict';
// `npm run bench [-- --quick] [-- --only throughput,memory,fanout,loss,fuzz,flood,heartbeat,dtls,cluster] [-- --profile] [-- --heap-detail] [-- --pin] [-- --out file]`
//   --profile      CPU profiles of the request and fan-out paths, summarized
//   --heap-detail  what the heap per endpoint / relation / dedup entry is made of (heap snapshots)
//   --pin          servers on CPU 1, load generator on CPU 0 (taskset)
//
// Benchmarks of the CoAP plugin against baselines measured in the same run:
// 1. throughput/latency vs a bare dgram + coap-packet server (the limit),
//    node-coap, and, inside a real Kuzzle 2.56, vs Kuzzle's own HTTP;
// 2. memory per idle endpoint, per observe relation, deduplication store;
// 3. notification fan-out; 4. exactly-once under 10% loss each way;
// 5. fuzz: mutated datagrams; 6. flood: spoofed endpoints (raw socket: root);
// 7. heartbeat: the cost of observe liveness on quiet relations;
// 8. dtls: coaps vs plain CoAP req/s, handshakes/s, memory per idle session;
// 9. cluster: a real 3-node Kuzzle cluster (root): fan-out spread over the
//    nodes vs on one, req/s through nginx to three nodes vs one.
// Prints a table, PASS/FAIL target lines (never asserted), writes the same as
// JSON, and ends with the `ratio ...` lines. Every process started is killed
// at the end, on failure or on Ctrl-C (see lib/procs.js).
const dgram = require('node:dgram');
const fs = require('node:fs');
const path = require('node:path');
const { spawnChild, installHooks } = require('./lib/procs');
const { evaluate, render, ratioLines } = require('./lib/report');
const { throughput } = require('./scenarios/throughput');
const { memory } = require('./scenarios/memory');
const { fanout } = require('./scenarios/fanout');
const { loss } = require('./scenarios/loss');
const { profile } = require('./scenarios/profile');
const { fuzz, flood } = require('./scenarios/hostile');
const { heartbeat } = require('./scenarios/heartbeat');
const { dtls } = require('./scenarios/dtls');
const { cluster } = require('./scenarios/cluster');

const SCENARIOS = ['throughput', 'memory', 'fanout', 'loss', 'fuzz', 'flood', 'heartbeat', 'dtls', 'cluster'];
// Run order: memory first, while Kuzzle boots (heap figures do not mind a busy
// machine); then what needs Kuzzle; Kuzzle is stopped before fan-out. The
// cluster boots its own three nodes, last, when nothing else runs.
const ORDER = ['memory', 'throughput', 'loss', 'fanout', 'fuzz', 'flood', 'heartbeat', 'dtls', 'cluster'];

const PARAMS = {
  full: {
    sockets: 32, window: 4, durationMs: 5000, warmupMs: 1500, rounds: 3,
    idleEndpoints: 10000, relationEndpoints: 5000, relationsPerEndpoint: 10, dedupMs: 60000,
    fanoutRelations: 10000, fanoutEndpoints: 10000, broadcasts: 3,
    lossRequests: 2000, lossSockets: 32, lossWindow: 4, lossAckTimeoutMs: 2000, dropRate: 0.1,
    profileMs: 10000, fuzzDatagrams: 1_000_000, floodEndpoints: 100_000, heartbeatRelations: 100_000, heartbeatWindowMs: 24000,
    handshakeConcurrency: 64, handshakeMs: 3000, dtlsSessions: 10000,
    clusterRelations: 10000, clusterWrites: 3,
  },
  quick: {
    sockets: 32, window: 4, durationMs: 700, warmupMs: 400, rounds: 3,
    idleEndpoints: 2000, relationEndpoints: 500, relationsPerEndpoint: 10, dedupMs: 3000,
    fanoutRelations: 10000, fanoutEndpoints: 10000, broadcasts: 2,
    lossRequests: 300, lossSockets: 16, lossWindow: 4, lossAckTimeoutMs: 300, dropRate: 0.1,
    profileMs: 3000, fuzzDatagrams: 100_000, floodEndpoints: 20_000, heartbeatRelations: 10_000, heartbeatWindowMs: 3000,
    handshakeConcurrency: 64, handshakeMs: 700, dtlsSessions: 1000,
    clusterRelations: 1500, clusterWrites: 3,
  },
};

function parseArgs(argv) {
  const args = { quick: false, only: SCENARIOS, profile: false, pin: false, out: null, heapDetail: false };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--quick') args.quick = true;
    else if (arg === '--profile') args.profile = true;
    else if (arg === '--pin') args.pin = true;
    else if (arg === '--heap-detail') args.heapDetail = true;
    else if (arg === '--only') args.only = argv[++i].split(',');
    else if (arg === '--out') args.out = argv[++i];
    else if (arg === '--help' || arg === '-h') {
      console.log(`usage: node test/bench/run.js [--quick] [--only ${SCENARIOS.join(',')}] [--profile] [--heap-detail] [--pin] [--out file.json]`);
      process.exit(0);
    } else throw new Error(`unknown argument ${arg}`);
  }
  for (const name of args.only) if (!SCENARIOS.includes(name)) throw new Error(`unknown scenario ${name} (${SCENARIOS.join(', ')})`);
  return args;
}

/**
 * A free UDP port below the kernel's ephemeral range (32768+): the bench opens
 * thousands of client sockets on port 0 while Kuzzle boots, and one of them
 * could take a port picked from that range before Kuzzle binds it.
 */
async function freeLowUdpPort() {
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = 20000 + Math.floor(Math.random() * 12000);
    const socket = dgram.createSocket('udp4');
    const free = await new Promise((resolve) => {
      socket.once('error', () => resolve(false));
      socket.bind(port, '127.0.0.1', () => resolve(true));
    });
    await new Promise((resolve) => socket.close(resolve));
    if (free) return port;
  }
  throw new Error('no free UDP port in 20000-32000');
}

/** A real Kuzzle with the plugin, an index and a collection for document:create. */
async function startKuzzle(progress) {
  const { startKuzzleHost } = require('../kuzzle-host');
  const host = await startKuzzleHost({ logLevel: 'warn', coap: { port: await freeLowUdpPort() } });
  const kuzzle = { host, index: 'bench', collection: 'sensors' };
  await host.kuzzle.query({ controller: 'index', action: 'create', index: kuzzle.index });
  await host.kuzzle.query({ controller: 'collection', action: 'create', index: kuzzle.index, collection: kuzzle.collection });
  progress(`Kuzzle 2.56 up in ${host.bootMs} ms: HTTP ${host.httpPort}, CoAP ${host.coapPort}`);
  return kuzzle;
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  installHooks();
  const mode = args.quick ? 'quick' : 'full';
  const params = { ...PARAMS[mode], quick: args.quick, heapDetail: args.heapDetail };
  const began = Date.now();
  const progress = (line) => console.log(`[${((Date.now() - began) / 1000).toFixed(1).padStart(5)} s] ${line}`);
  // --pin: server processes on CPU 1, the load generator on CPU 0 (default: the OS decides).
  const serverCpu = args.pin ? 1 : null;
  progress(`kuzzle-coap bench, ${mode} mode, scenarios: ${args.only.join(', ')}${args.pin ? ', pinned' : ''}`);

  const needKuzzle = args.only.includes('throughput') || (args.only.includes('loss') && !args.quick);
  let kuzzle = null;
  let bootedKuzzle = null; // also stopped at the end if no scenario awaited it
  const kuzzlePromise = needKuzzle ? startKuzzle(progress) : Promise.resolve(null);
  kuzzlePromise.catch(() => {}); // awaited by the first scenario that needs it
  kuzzlePromise.then((k) => { if (k) bootedKuzzle = k; }, () => {});
  const agent = await spawnChild(path.join(__dirname, 'agent.js'), [], { name: 'load generator', cpu: args.pin ? 0 : null });
  const results = { mode, startedAt: new Date(began).toISOString(), node: process.version, params, errors: {} };
  try {
    const ctx = { agent, kuzzle: null, quick: args.quick, params, progress, cpu: serverCpu };
    const scenarios = { throughput, memory, fanout, loss, fuzz, flood, heartbeat, dtls, cluster };
    const order = ORDER.filter((name) => args.only.includes(name));
    for (const [i, name] of order.entries()) {
      const usesKuzzle = name === 'throughput' || (name === 'loss' && !args.quick);
      if (usesKuzzle && kuzzle === null && !results.errors.kuzzle) {
        try {
          kuzzle = await kuzzlePromise;
          ctx.kuzzle = kuzzle;
        } catch (error) {
          results.errors.kuzzle = error.message;
          progress(`Kuzzle did not start: ${error.message.split('\n')[0]}`);
        }
      }
      progress(`scenario ${name}`);
      try {
        results[name] = await scenarios[name](ctx);
      } catch (error) {
        results.errors[name] = error.stack ?? String(error);
        progress(`scenario ${name} failed: ${error.stack ?? error}`);
      }
      const later = order.slice(i + 1).some((n) => n === 'throughput' || (n === 'loss' && !args.quick));
      if (kuzzle !== null && !later) {
        await kuzzle.host.stop().catch(() => {});
        kuzzle = null;
        ctx.kuzzle = null;
        progress('Kuzzle stopped');
      }
    }
    if (args.profile) {
      progress('profile of the plugin (minimal entry point) under load');
      try {
        results.profile = await profile(ctx);
      } catch (error) {
        results.errors.profile = error.stack ?? String(error);
        progress(`profile failed: ${error.stack ?? error}`);
      }
    }
  } finally {
    await agent.stop().catch(() => {});
    if (kuzzle) await kuzzle.host.stop().catch(() => {});
    else if (bootedKuzzle) await bootedKuzzle.host.stop().catch(() => {});
  }

  results.elapsedMs = Date.now() - began;
  const evaluation = evaluate(results);
  results.evaluation = evaluation;
  const out = path.resolve(args.out ?? path.join(__dirname, 'results', args.quick ? 'bench-results.quick.json' : 'bench-results.json'));
  fs.mkdirSync(path.dirname(out), { recursive: true });
  fs.writeFileSync(out, `${JSON.stringify(results, null, 2)}\n`);

  console.log(render(results, evaluation));
  if (results.profile) console.log(`\n${results.profile.text}`);
  const failed = Object.keys(results.errors);
  if (failed.length) console.log(`\nerrors in: ${failed.join(', ')} (details in the JSON file)`);
  console.log(`\nresults: ${out} (${(results.elapsedMs / 1000).toFixed(1)} s)`);
  console.log(ratioLines(evaluation));
  process.exitCode = failed.length ? 1 : 0;
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
