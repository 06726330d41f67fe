'use strict';
// coaps endpoints belong to one DTLS session (RFC 7252 §9.1), with the test double of Kuzzle's
// entry point (whose test:echo returns the token a request ran with): a second device that shakes
// hands from the same address and port, and reuses a message ID of the first, runs with its own
// credential, never gets the first device's cached answer; the first session's Kuzzle connection
// is removed when its session ends.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const dgram = require('node:dgram');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { dtls } = require('node-dtls-client');
const coapPacket = require('coap-packet');
const { startDouble } = require('../support/hostDouble');
const { waitUntil } = require('../support/util');

const DEVICES = [
  { identity: 'device-a', psk: 'key-a', apiKey: 'api-key-of-a' },
  { identity: 'device-b', psk: 'key-b', apiKey: 'api-key-of-b' },
];
let dir;
let double;

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'coaps-sessions-'));
  const file = path.join(dir, 'devices.json');
  fs.writeFileSync(file, JSON.stringify({ devices: DEVICES }));
  double = startDouble({ coap: { host: '127.0.0.1', plain: false, coaps: { enabled: true, host: '127.0.0.1', port: 0, credentials: { file } } } });
  await double.protocol.init(double.entryPoint, double.context);
});

after(async () => {
  await double?.stop();
  fs.rmSync(dir, { recursive: true, force: true });
});

async function freePort() {
  const probe = dgram.createSocket('udp4');
  await new Promise((resolve) => probe.bind(0, '127.0.0.1', resolve));
  const { port } = probe.address();
  await new Promise((resolve) => probe.close(resolve));
  return port;
}

/** One CON test:echo with message ID `messageId` over a new DTLS session from `listenPort`; the decoded answer. */
function echoOverDtls({ identity, psk }, listenPort, messageId) {
  return new Promise((resolve, reject) => {
    const socket = dtls.createSocket({
      type: 'udp4', address: '127.0.0.1', port: double.protocol.listeningSecure.port, psk: { [identity]: psk }, timeout: 5000, listenPort,
    });
    const timer = setTimeout(() => finish(new Error('no answer')), 8000);
    const finish = (error, value) => {
      clearTimeout(timer);
      socket.close();
      if (error) reject(error);
      else resolve(value);
    };
    socket.on('error', finish);
    socket.on('connected', () => {
      const options = ['api', 'test', 'echo'].map((part) => ({ name: 'Uri-Path', value: Buffer.from(part) }));
      options.push({ name: 'Accept', value: Buffer.from([50]) });
      socket.send(coapPacket.generate({ messageId, token: Buffer.from([9, 9]), code: '0.02', confirmable: true, options }));
    });
    socket.on('message', (datagram) => {
      const packet = coapPacket.parse(datagram);
      if (packet.ack && packet.code !== '0.00') finish(null, JSON.parse(packet.payload.toString()));
    });
  });
}

test('a new session at the same address and port, reusing a message ID: its own credential, not the previous answer', async () => {
  const listenPort = await freePort();
  const first = await echoOverDtls(DEVICES[0], listenPort, 4242);
  assert.equal(first.result.jwt, DEVICES[0].apiKey);
  await waitUntil(() => double.protocol.stats().secureTransport.dtls.sessions === 0, 2000);
  const second = await echoOverDtls(DEVICES[1], listenPort, 4242);
  assert.equal(second.result.jwt, DEVICES[1].apiKey, 'the second device ran with its own credential, not from the deduplication cache');
  assert.equal(double.calls.get('test:echo'), 2, 'both requests ran');
});

test('the Kuzzle connection of a coaps endpoint is removed when its DTLS session ends', async () => {
  const removedBefore = double.removed.length;
  await echoOverDtls(DEVICES[0], await freePort(), 1);
  // node-dtls-client closes with a close_notify: the session ends, and its connection with it.
  assert.ok(await waitUntil(() => double.removed.length === removedBefore + 1, 3000), 'the connection was removed');
});
