'use strict';
// coaps endpoints belong to one DTLS session (RFC 7252 §9.1), with the test double of Kuzzle's
// entry point (whose test:echo returns the token a request ran with): a second device that shakes
// hands from the same address and port, and reuses a message ID of the first, runs with its own
// credential, never gets the first device's cached answer; the first session's Kuzzle connection
// is removed when its session ends. And a fuzzer: mutated DTLS records spoofed as a live
// session's and from other ports, then mutated CoAP messages inside a session, crash nothing.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const dgram = require('node:dgram');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { dtls } = require('node-dtls-client');
const coapPacket = require('coap-packet');
const { random, mutate } = require('../support/fuzzer');
const { startDouble } = require('../support/hostDouble');
const { createUdpProxy } = require('../support/udpProxy');
const { freeUdpPort, waitUntil } = require('../support/util');

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

/** A DTLS client session to `port` (the plugin, or a proxy in front of it). */
function connect({ identity, psk }, { port = double.protocol.listeningSecure.port, listenPort } = {}) {
  return new Promise((resolve, reject) => {
    const socket = dtls.createSocket({ type: 'udp4', address: '127.0.0.1', port, psk: { [identity]: psk }, timeout: 5000, ...(listenPort ? { listenPort } : {}) });
    socket.once('error', reject);
    socket.once('connected', () => resolve(socket));
  });
}

/** One CON test:echo over an open session; the decoded answer. */
function echoOn(socket, messageId) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { socket.off('message', onMessage); reject(new Error('no answer')); }, 5000);
    const onMessage = (datagram) => {
      const packet = coapPacket.parse(datagram);
      if (packet.messageId !== messageId || !packet.ack || packet.code === '0.00') return;
      clearTimeout(timer);
      socket.off('message', onMessage);
      resolve(JSON.parse(packet.payload.toString()));
    };
    socket.on('message', onMessage);
    const options = ['api', 'test', 'echo'].map((part) => ({ name: 'Uri-Path', value: Buffer.from(part) }));
    options.push({ name: 'Accept', value: Buffer.from([50]) });
    socket.send(coapPacket.generate({ messageId, token: Buffer.from([9, 9]), code: '0.02', confirmable: true, options }));
  });
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
  const listenPort = await freeUdpPort();
  const first = await echoOverDtls(DEVICES[0], listenPort, 4242);
  assert.equal(first.result.jwt, DEVICES[0].apiKey);
  await waitUntil(() => double.protocol.stats().secureTransport.dtls.sessions === 0, 2000);
  const second = await echoOverDtls(DEVICES[1], listenPort, 4242);
  assert.equal(second.result.jwt, DEVICES[1].apiKey, 'the second device ran with its own credential, not from the deduplication cache');
  assert.equal(double.calls.get('test:echo'), 2, 'both requests ran');
});

test('the Kuzzle connection of a coaps endpoint is removed when its DTLS session ends', async () => {
  const removedBefore = double.removed.length;
  await echoOverDtls(DEVICES[0], await freeUdpPort(), 1);
  // node-dtls-client closes with a close_notify: the session ends, and its connection with it.
  assert.ok(await waitUntil(() => double.removed.length === removedBefore + 1, 3000), 'the connection was removed');
});

test('fuzz: 20,000 mutated DTLS records spoofed as a live session and from other ports, then 2,000 mutated CoAP messages inside a session: no crash, the session still answers', async () => {
  const seen = [];
  const proxy = await createUdpProxy({ targetPort: double.protocol.listeningSecure.port, tap: (datagram, from) => { seen.push({ datagram, from }); } });
  const socket = await connect(DEVICES[0], { port: proxy.port });
  try {
    assert.equal((await echoOn(socket, 100)).result.jwt, DEVICES[0].apiKey);
    const next = random(11);
    const stranger = dgram.createSocket('udp4');
    await new Promise((resolve) => stranger.bind(0, '127.0.0.1', resolve));
    for (let i = 0; i < 20000; i++) {
      const { datagram, from } = seen[next(seen.length)];
      const mutated = Buffer.from(datagram);
      for (let flips = 1 + next(3); flips > 0; flips--) mutated[next(mutated.length)] = next(256);
      const cut = next(4) === 0 ? mutated.subarray(0, next(mutated.length + 1)) : mutated;
      if (i % 2 === 0) proxy.inject(from, cut); // as the live session's endpoint
      else stranger.send(cut, double.protocol.listeningSecure.port, '127.0.0.1');
      if (i % 500 === 0) await new Promise((resolve) => setImmediate(resolve));
    }
    stranger.close();
    await new Promise((resolve) => setTimeout(resolve, 1000)); // the socket's queue drains: the next datagrams are not lost in it
    const before = double.protocol.stats().secureTransport.received;
    for (let i = 0; i < 2000; i++) {
      socket.send(mutate(next));
      if (i % 50 === 0) await new Promise((resolve) => setTimeout(resolve, 2));
    }
    await new Promise((resolve) => setTimeout(resolve, 500));
    const arrived = double.protocol.stats().secureTransport.received - before;
    // Loopback UDP through the in-process proxy loses some under this burst; most must arrive.
    assert.ok(arrived >= 1000, `the mutated CoAP messages reached the message layer: ${arrived}`);
    assert.equal((await echoOn(socket, 101)).result.jwt, DEVICES[0].apiKey, 'the session survived');
    const { secureTransport } = double.protocol.stats();
    assert.equal(secureTransport.receiveErrors, 0);
    assert.ok(secureTransport.malformed > 0, `malformed ones were refused: ${JSON.stringify(secureTransport)}`);
    assert.deepEqual(double.logs.filter((line) => line.level === 'error'), []);
  } finally {
    socket.close();
    proxy.close();
  }
});
