'use strict';
// Scenario 8: coaps (DTLS 1.2, PSK, AES-128-CCM8) against plain CoAP, with
// the bench's native DTLS client (dtls-client/) in the load generator:
// 1. req/s over coaps and over plain CoAP, same load, one plugin process
//    serving both listeners (minimal entry point: the plugin's own cost, as
//    throughput's (c) against the limit), in interleaved rounds;
// 2. full handshakes per second: cookie round, PSK, CCM8, `concurrency` in
//    parallel, each session closed with close_notify (the server ends it);
// 3. memory per idle session: in a plugin process with --expose-gc (hostDouble
//    entry point), RSS (V8 heap + OpenSSL's malloc'd state), heapUsed and
//    external after gc(), before and after N sessions are established; then
//    after one request from each (its CoAP endpoint and Kuzzle connection),
//    once the deduplication entries expired.
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawnChild } = require('../lib/procs');
const { measuredRun, interleavedRounds, roundsSummary } = require('../lib/loadRounds');
const { median, cpuSeconds, sleep } = require('../lib/util');

const PLUGIN = path.join(__dirname, '..', 'servers', 'plugin.js');
const NOW = ['api', 'server', 'now'];
const DEVICE = { identity: 'bench-device', psk: 'bench-secret', apiKey: 'bench-api-key' };
const SECURE = { identity: DEVICE.identity, psk: DEVICE.psk };
const WARMUP_SESSIONS = 50;
const DEDUP_EXPIRY_WAIT_MS = 2600; // 1 s lifetime + the 1 s sweep period, with margin

const perUnit = (after, before, count) => (count > 0 ? Math.round((after - before) / count) : null);

/** The plugin with plain CoAP and coaps, PSK keys from a credentials file. */
function startServer({ entry, file, coap = {}, execArgv = [], name, cpu }) {
  const coaps = { enabled: true, host: '127.0.0.1', port: 0, credentials: { file } };
  return spawnChild(PLUGIN, [JSON.stringify({ entry, coap: { ...coap, coaps } })], { execArgv, name, cpu });
}

/** One timed load run, plain or coaps, with the server's CPU use. */
function runOnce(agent, server, secure, { sockets, window, durationMs }) {
  const port = secure ? server.info.securePort : server.info.port;
  return measuredRun(server.pid, () => agent.call('coapLoad', { port, path: NOW, sockets, window, durationMs, drainMs: 3000, secure: secure ? SECURE : undefined }));
}

async function throughputAndHandshakes({ agent, params, progress, cpu, file }) {
  const server = await startServer({ entry: 'minimal', file, name: 'plugin server (coap + coaps)', cpu });
  try {
    const listeners = [{ id: 'plain', secure: false }, { id: 'coaps', secure: true }];
    const runs = await interleavedRounds(listeners, (listener, p) => runOnce(agent, server, listener.secure, p), params, progress);

    const port = server.info.securePort;
    const load = { port, ...SECURE, concurrency: params.handshakeConcurrency };
    await agent.call('handshakeLoad', { ...load, durationMs: params.warmupMs });
    const handshakeRuns = [];
    for (let round = 0; round < params.rounds; round++) {
      const before = (await server.call('stats')).secureTransport.dtls;
      const cpu0 = cpuSeconds(server.pid);
      const result = await agent.call('handshakeLoad', { ...load, durationMs: params.handshakeMs }, params.handshakeMs + 60000);
      const cpu1 = cpuSeconds(server.pid);
      const after = (await server.call('stats')).secureTransport.dtls;
      result.serverCpu = cpu0 === null ? null : Math.round(((cpu1 - cpu0) / (result.measuredMs / 1000)) * 100) / 100;
      result.cpuUsPerHandshake = cpu0 === null || result.completed === 0 ? null : Math.round(((cpu1 - cpu0) * 1e6) / result.completed);
      result.server = { handshakesOk: after.handshakesOk - before.handshakesOk, cookieRounds: after.cookieRounds - before.cookieRounds, closedByPeer: after.closedByPeer - before.closedByPeer };
      handshakeRuns.push(result);
      progress(`  handshakes ${round + 1}/${params.rounds}: ${result.perSecond}/s (${params.handshakeConcurrency} in parallel), p50 ${result.latencyMs.p50} ms, p99 ${result.latencyMs.p99} ms, server CPU ${result.serverCpu} (${result.cpuUsPerHandshake} µs each), client CPU ${result.clientCpu}, failed ${result.failed}, server: ${result.server.handshakesOk} ok after ${result.server.cookieRounds} cookie rounds`);
    }
    const stats = (await server.call('stats')).secureTransport.dtls;
    return {
      plain: roundsSummary(runs.get('plain')),
      coaps: roundsSummary(runs.get('coaps')),
      handshakes: {
        concurrency: params.handshakeConcurrency,
        durationMs: params.handshakeMs,
        perSecond: median(handshakeRuns.map((r) => r.perSecond)),
        p50: median(handshakeRuns.map((r) => r.latencyMs.p50)),
        p99: median(handshakeRuns.map((r) => r.latencyMs.p99)),
        serverCpu: median(handshakeRuns.map((r) => r.serverCpu)),
        cpuUsPerHandshake: median(handshakeRuns.map((r) => r.cpuUsPerHandshake)),
        clientCpu: median(handshakeRuns.map((r) => r.clientCpu)),
        failed: handshakeRuns.reduce((sum, r) => sum + r.failed, 0),
        withoutCookie: handshakeRuns.reduce((sum, r) => sum + r.withoutCookie, 0),
        serverOk: handshakeRuns.reduce((sum, r) => sum + r.server.handshakesOk, 0),
        serverCookieRounds: handshakeRuns.reduce((sum, r) => sum + r.server.cookieRounds, 0),
        serverFailed: stats.handshakesFailed,
        rounds: handshakeRuns.map((r) => ({ perSecond: r.perSecond, p99: r.latencyMs.p99, serverCpu: r.serverCpu, cpuUsPerHandshake: r.cpuUsPerHandshake, clientCpu: r.clientCpu, failed: r.failed })),
      },
    };
  } finally {
    await server.stop();
  }
}

async function idleSessions({ agent, params, progress, cpu, file }) {
  const server = await startServer({
    entry: 'double', file, coap: { deduplication: { lifetimeMs: 1000 } }, execArgv: ['--expose-gc'], name: 'plugin server (coaps memory)', cpu,
  });
  const count = params.dtlsSessions;
  try {
    await agent.call('closeFleet');
    const port = server.info.securePort;
    // Warm-up on sessions that are not measured: JIT code, the listener, OpenSSL's first allocations.
    await agent.call('coapLoad', { port, path: NOW, sockets: 4, window: 4, maxRequests: 2000, drainMs: 2000, secure: SECURE });
    await agent.call('secureSessions', { port, offset: 0, count: WARMUP_SESSIONS, ...SECURE });
    await agent.call('secureRequests', { offset: 0, count: WARMUP_SESSIONS, path: NOW });
    await sleep(DEDUP_EXPIRY_WAIT_MS);
    const h0 = await server.call('heap');

    const opened = await agent.call('secureSessions', { port, offset: WARMUP_SESSIONS, count, ...SECURE }, 600000);
    const h1 = await server.call('heap');
    const stats1 = (await server.call('stats')).secureTransport.dtls;
    const established = opened.endpoints - WARMUP_SESSIONS - (opened.failed ?? 0);
    progress(`  ${established}/${count} sessions established in ${opened.ms} ms (${stats1.sessions} held by the server); per session: ${perUnit(h1.rss, h0.rss, established)} B RSS, ${perUnit(h1.heapUsed, h0.heapUsed, established)} B heap, ${perUnit(h1.external, h0.external, established)} B external`);

    const requests = await agent.call('secureRequests', { offset: WARMUP_SESSIONS, count, path: NOW }, 600000);
    await sleep(DEDUP_EXPIRY_WAIT_MS);
    const h2 = await server.call('heap');
    const stats2 = await server.call('stats');
    progress(`  one request from each: ${requests.ok}/${count} answered in ${requests.ms} ms; per session then: ${perUnit(h2.rss, h0.rss, established)} B RSS, ${perUnit(h2.heapUsed, h0.heapUsed, established)} B heap`);
    return {
      sessions: established,
      requested: count,
      failed: opened.failed,
      establishMs: opened.ms,
      establishPerSecond: opened.ms > 0 ? Math.round((established / opened.ms) * 1000) : null,
      serverSessions: stats1.sessions,
      rssPerSession: perUnit(h1.rss, h0.rss, established),
      heapPerSession: perUnit(h1.heapUsed, h0.heapUsed, established),
      externalPerSession: perUnit(h1.external, h0.external, established),
      withRequest: {
        answered: requests.ok,
        codes: requests.codes,
        connections: stats2.connections,
        rssPerSession: perUnit(h2.rss, h0.rss, established),
        heapPerSession: perUnit(h2.heapUsed, h0.heapUsed, established),
        externalPerSession: perUnit(h2.external, h0.external, established),
      },
      bytes: { before: h0, sessions: h1, afterRequests: h2 },
    };
  } finally {
    await agent.call('closeFleet').catch(() => {});
    await server.stop();
  }
}

async function dtls(ctx) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kuzzle-coap-bench-dtls-'));
  try {
    const file = path.join(dir, 'devices.json');
    fs.writeFileSync(file, JSON.stringify({ devices: [DEVICE] }));
    const speed = await throughputAndHandshakes({ ...ctx, file });
    const memory = await idleSessions({ ...ctx, file });
    return { params: ctx.params, ...speed, memory };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

module.exports = { dtls };
