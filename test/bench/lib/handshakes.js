'use strict';
// The DTLS handshake load generator: `concurrency` client endpoints, each in a
// closed loop of full PSK handshakes (ClientHello, HelloVerifyRequest and its
// cookie, key exchange, Finished) followed by a close_notify, for `durationMs`.
// An endpoint keeps its socket from one handshake to the next: the plugin
// ends the session on the close_notify, and the next ClientHello from that
// address starts from its stateless listener again, cookie round included.
const { performance } = require('node:perf_hooks');
const { SecureEndpoint } = require('./dtlsClient');
const { Histogram } = require('./histogram');

/**
 * @param {object} o
 * @param {number} o.port  @param {string} [o.host]  @param {string} o.identity  @param {string} o.psk
 * @param {number} [o.concurrency=64]  @param {number} o.durationMs
 */
async function handshakeLoad(o) {
  const options = { port: o.port, host: o.host ?? '127.0.0.1', identity: o.identity, psk: Buffer.from(o.psk) };
  const endpoints = Array.from({ length: o.concurrency ?? 64 }, () => new SecureEndpoint(options));
  await Promise.all(endpoints.map((endpoint) => endpoint.bind()));
  const histogram = new Histogram();
  const counters = { completed: 0, inWindow: 0, failed: 0, withoutCookie: 0 };
  const errors = {};
  let running = true;
  const tStart = performance.now();
  const tEnd = tStart + o.durationMs;
  const cpuStart = process.cpuUsage();

  async function loop(endpoint) {
    while (running) {
      const t0 = performance.now();
      const rounds = endpoint.cookieRounds;
      try {
        await endpoint.handshake();
      } catch (error) {
        counters.failed++;
        errors[error.message] = (errors[error.message] ?? 0) + 1;
        await new Promise((resolve) => setTimeout(resolve, 50)); // a refusing server is not hammered in a tight loop
        continue;
      }
      const now = performance.now();
      histogram.record(now - t0);
      counters.completed++;
      if (now <= tEnd) counters.inWindow++;
      if (endpoint.cookieRounds === rounds) counters.withoutCookie++;
      endpoint.end();
    }
  }
  const loops = endpoints.map(loop);
  await new Promise((resolve) => setTimeout(resolve, o.durationMs));
  const tStopped = performance.now();
  const cpu = process.cpuUsage(cpuStart);
  running = false;
  await Promise.all(loops); // each finishes the handshake it is in
  for (const endpoint of endpoints) endpoint.close();
  const measuredMs = Math.min(o.durationMs, tStopped - tStart);
  return {
    ...counters,
    errors,
    concurrency: endpoints.length,
    measuredMs: Math.round(measuredMs),
    perSecond: Math.round((counters.inWindow / measuredMs) * 1000),
    clientCpu: Math.round(((cpu.user + cpu.system) / 1000 / (tStopped - tStart)) * 100) / 100,
    latencyMs: histogram.summary(),
  };
}

module.exports = { handshakeLoad };
