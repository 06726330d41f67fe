'use strict';

/*
 * Docker health check of a Kuzzle node with this plugin (the image keeps it at
 * /opt/kuzzle-coap/healthcheck.js). Healthy when both answer within the time limit:
 * - Kuzzle's HTTP server: GET /_healthcheck gives 200. That route skips Kuzzle's funnel (no
 *   authentication, no access log line every few seconds), and Kuzzle listens on HTTP only once its
 *   boot is over, protocols included.
 * - the plugin's UDP socket: a CoAP ping (an empty CON) gets a RST (RFC 7252 §4.3).
 * Exit 0 when healthy, 1 otherwise with the reason on stderr (docker inspect shows it).
 *
 *   node healthcheck.js [host] [httpPort] [coapPort]     defaults: 127.0.0.1 7512 5683
 */

const dgram = require('node:dgram');
const http = require('node:http');
const net = require('node:net');

const TIMEOUT_MS = 3000;

function httpCheck(host, port, timeoutMs) {
  return new Promise((resolve) => {
    const request = http.get({ host, port, path: '/_healthcheck', timeout: timeoutMs }, (response) => {
      response.resume();
      resolve(response.statusCode === 200 ? null : `GET /_healthcheck: HTTP ${response.statusCode}`);
    });
    request.on('timeout', () => request.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    request.on('error', (error) => resolve(`GET /_healthcheck: ${error.message}`));
  });
}

/** Resolves null when a RST answers a CoAP ping of host:port within timeoutMs, else the reason (also used by the test cluster's balancer). */
function coapPing(host, port, timeoutMs) {
  return new Promise((resolve) => {
    const socket = dgram.createSocket(net.isIPv6(host) ? 'udp6' : 'udp4');
    const messageId = Math.floor(Math.random() * 0x10000);
    let finished = false;
    const finish = (why) => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      socket.close();
      resolve(why);
    };
    const timer = setTimeout(() => finish(`CoAP ping of udp ${host}:${port}: no RST within ${timeoutMs} ms`), timeoutMs);
    socket.on('error', (error) => finish(`CoAP ping of udp ${host}:${port}: ${error.message}`));
    socket.on('message', (m) => {
      // RST (version 1, type 3), code 0.00, our message ID
      if (m.length >= 4 && (m[0] >> 4) === 0x7 && m[1] === 0 && m.readUInt16BE(2) === messageId) finish(null);
    });
    // connect() first: an ICMP port unreachable then fails at once (ECONNREFUSED) instead of timing out
    socket.connect(port, host, () => socket.send(Buffer.from([0x40, 0x00, messageId >> 8, messageId & 0xff])));
  });
}

/** Resolves to [] when healthy, or to the reasons it is not. */
async function check({ host = '127.0.0.1', httpPort = 7512, coapPort = 5683, timeoutMs = TIMEOUT_MS } = {}) {
  const reasons = await Promise.all([httpCheck(host, httpPort, timeoutMs), coapPing(host, coapPort, timeoutMs)]);
  return reasons.filter((why) => why !== null);
}

if (require.main === module) {
  const [host, httpPort, coapPort] = process.argv.slice(2);
  check({ host, httpPort: httpPort && Number(httpPort), coapPort: coapPort && Number(coapPort) }).then((reasons) => {
    for (const why of reasons) process.stderr.write(`unhealthy: ${why}\n`);
    process.exit(reasons.length === 0 ? 0 : 1);
  });
}

module.exports = { check, coapPing };
