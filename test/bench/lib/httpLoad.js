'use strict';
// The HTTP load generator: `concurrency` keep-alive connections (node:http
// Agent), one request in flight on each, for `durationMs` or `maxRequests`:
// the same closed loop as the CoAP generator, for Kuzzle's HTTP protocol.
// (Kuzzle closes every HTTP connection after its response: each request then
// pays a TCP connection, as every Kuzzle HTTP client does.)
const http = require('node:http');
const { performance } = require('node:perf_hooks');
const { Histogram } = require('./histogram');
const { loadSummary } = require('./util');

/**
 * @param {object} o
 * @param {number} o.port  @param {string} [o.host]  @param {string} [o.path='/_query']
 * @param {object|Function} o.body JSON body, or seq => body
 * @param {number} [o.concurrency=256]  @param {number} [o.durationMs]  @param {number} [o.maxRequests]
 * @param {number} [o.drainMs=2000]
 */
async function httpLoad(o) {
  const host = o.host ?? '127.0.0.1';
  const concurrency = o.concurrency ?? 256;
  const durationMs = o.durationMs ?? Infinity;
  const maxRequests = o.maxRequests ?? Infinity;
  const bodyOf = typeof o.body === 'function' ? o.body : (() => { const fixed = Buffer.from(JSON.stringify(o.body)); return () => fixed; })();
  // Keep-alive is asked for, but Kuzzle 2.56's HTTP answers `Connection: close`: count the connections.
  const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency, maxFreeSockets: concurrency });
  let connections = 0;
  const createConnection = agent.createConnection.bind(agent);
  agent.createConnection = (...args) => { connections++; return createConnection(...args); };
  const histogram = new Histogram();
  const codes = {};
  const counters = { issued: 0, completed: 0, inWindow: 0, errors: 0 };
  let running = true;
  let busy = 0;
  let tEnd = Infinity;
  let onIdle = null;

  function issue() {
    if (!running || counters.issued >= maxRequests) return;
    const seq = counters.issued++;
    const body = bodyOf(seq);
    const payload = Buffer.isBuffer(body) ? body : Buffer.from(JSON.stringify(body));
    const started = performance.now();
    busy++;
    const done = (status) => {
      busy--;
      const now = performance.now();
      if (status !== null) {
        histogram.record(now - started);
        codes[status] = (codes[status] ?? 0) + 1;
        counters.completed++;
        if (now <= tEnd) counters.inWindow++;
      }
      issue();
      if (busy === 0 && onIdle !== null) onIdle();
    };
    const request = http.request({
      agent, host, port: o.port, method: 'POST', path: o.path ?? '/_query',
      headers: { 'content-type': 'application/json', 'content-length': payload.length },
    }, (response) => {
      response.on('data', () => {});
      response.on('end', () => done(response.statusCode));
      response.on('error', () => { counters.errors++; done(null); });
    });
    request.on('error', () => { counters.errors++; done(null); });
    request.end(payload);
  }

  const cpuStart = process.cpuUsage();
  const tStart = performance.now();
  tEnd = tStart + durationMs;
  for (let i = 0; i < concurrency; i++) issue();
  await new Promise((resolve) => {
    onIdle = () => { if (counters.issued >= maxRequests) resolve(); };
    if (Number.isFinite(durationMs)) setTimeout(resolve, durationMs);
  });
  const tStopped = performance.now();
  const cpu = process.cpuUsage(cpuStart);
  running = false;
  if (busy > 0) {
    await new Promise((resolve) => {
      onIdle = resolve;
      setTimeout(resolve, o.drainMs ?? 2000);
    });
  }
  const tDone = performance.now();
  agent.destroy();
  return { ...loadSummary({ counters, busy, codes, durationMs, tStart, tStopped, tDone, cpu, histogram }), connections };
}

module.exports = { httpLoad };
