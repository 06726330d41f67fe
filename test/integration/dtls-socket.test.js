'use strict';
// The coaps transport (src/dtls/dtlsSocket.ts) on its own, against node-dtls-client through an
// in-process UDP proxy that can record, replay, forge and drop datagrams: session replacement
// when a device restarts on the same port (and not for a late copy of the opening ClientHello),
// forged short records, PSK keys fetched before OpenSSL needs them, idle expiry with
// close_notify, the handshake deadline and the session cap. (10% loss: test/e2e/coaps.test.js,
// with libcoap's clients, which retransmit handshake flights and CONs.)
const { test, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const { dtls } = require('node-dtls-client');
const { DtlsSocket } = require('../../dist/dtls/dtlsSocket');
const { createUdpProxy } = require('../support/udpProxy');
const { freeUdpPort, sleep, waitUntil } = require('../support/util');

const KEYS = new Map([['dev-a', Buffer.from('key-a')], ['dev-b', Buffer.from('key-b')], ['dev-c', Buffer.from('key-c')]]);
const memoryKeys = { pskOf: (identity) => KEYS.get(identity) ?? null, fetchPsk: async () => {} };
const cleanups = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()();
});

const OPTIONS = {
  host: '127.0.0.1', port: 0, receiveBufferSize: 1 << 20, ciphers: 'PSK-AES128-CCM8:PSK-AES128-GCM-SHA256', mtu: 1232,
  certificate: null, privateKey: null, ca: null, verifyClient: 'none',
  handshakeTimeoutMs: 10000, maxSessions: 100, maxHandshakes: 100, sessionIdleMs: 60000, cookieSecretLifetimeMs: 60000,
};

/** A DtlsSocket that echoes every datagram back, prefixed with the session's identity. */
async function echoServer(options = {}, keys = memoryKeys) {
  const ended = [];
  const logs = [];
  const socket = new DtlsSocket({ ...OPTIONS, ...options }, keys, { debug: () => {}, info: (m) => logs.push(m) }, (error) => logs.push(error.message));
  const { port } = await socket.open({
    datagram: (datagram, from) => socket.send(Buffer.concat([Buffer.from(`${from.security.identity}:`), datagram]), from, () => {}),
    ended: (address, p) => ended.push(`${address}|${p}`),
  });
  cleanups.push(() => socket.close());
  return { socket, port, ended, logs, stats: () => socket.stats.dtls };
}

async function proxyTo(port, options = {}) {
  const proxy = await createUdpProxy({ targetPort: port, ...options });
  cleanups.push(() => proxy.close());
  return proxy;
}

/** A connected node-dtls-client; `ask(text)` resolves with the next message. */
function client(port, { identity = 'dev-a', key = KEYS.get(identity), listenPort, cipher = 'TLS_PSK_WITH_AES_128_CCM_8', timeout = 5000 } = {}) {
  return new Promise((resolve, reject) => {
    const socket = dtls.createSocket({ type: 'udp4', address: '127.0.0.1', port, psk: { [identity]: key }, timeout, ciphers: [cipher], ...(listenPort ? { listenPort } : {}) });
    const messages = [];
    let closed = false;
    socket.on('message', (message) => messages.push(message.toString()));
    socket.on('close', () => { closed = true; });
    socket.on('error', (error) => reject(error));
    socket.on('connected', () => resolve({
      socket,
      get closed() { return closed; },
      async ask(text, ms = 3000) {
        const before = messages.length;
        socket.send(Buffer.from(text));
        assert.ok(await waitUntil(() => messages.length > before, ms, 10), `an answer to ${text}`);
        return messages[before];
      },
    }));
    cleanups.push(async () => { try { socket.close(); } catch { /* closed */ } });
  });
}

test('a handshake, an echo carrying the PSK identity, and the stats', async () => {
  const server = await echoServer();
  const a = await client(server.port);
  assert.equal(await a.ask('hello'), 'dev-a:hello');
  assert.deepEqual({ sessions: server.stats().sessions, ok: server.stats().handshakesOk }, { sessions: 1, ok: 1 });
});

test('revoking a credential ends the sessions of that kind and identity only', async () => {
  const server = await echoServer();
  const a = await client(server.port, { identity: 'dev-a' });
  const b = await client(server.port, { identity: 'dev-b' });
  assert.equal(server.socket.endIdentity('certificate', 'dev-a'), 0, 'a certificate subject is not a PSK identity');
  assert.equal(server.socket.endIdentity('psk', 'dev-a'), 1);
  assert.ok(await waitUntil(() => a.closed, 2000, 20), 'dev-a heard its close_notify');
  assert.equal(await b.ask('b'), 'dev-b:b');
  assert.equal(server.stats().revoked, 1);
  assert.equal(server.stats().sessions, 1);
});

test('an empty application record (legal in DTLS 1.2) leaves the session alone', async () => {
  const server = await echoServer();
  const a = await client(server.port);
  a.socket.send(Buffer.alloc(0));
  await sleep(100);
  assert.equal(await a.ask('still'), 'dev-a:still');
  assert.equal(server.stats().sessions, 1);
});

test('a device that restarts on the same port gets a new session; the old one ends and the layers above are told', async () => {
  const server = await echoServer();
  // A device that reboots sends no close_notify: the proxy swallows node-dtls-client's alerts.
  const proxy = await proxyTo(server.port, { tap: (datagram) => datagram[0] === 21 });
  const listenPort = await freeUdpPort();
  const first = await client(proxy.port, { listenPort });
  assert.equal(await first.ask('one'), 'dev-a:one');
  first.socket.close();
  await sleep(100);
  assert.equal(server.stats().sessions, 1, 'the server still holds the first session');
  const second = await client(proxy.port, { listenPort, identity: 'dev-b' });
  assert.equal(await second.ask('two'), 'dev-b:two');
  assert.equal(server.stats().replaced, 1);
  assert.equal(server.stats().sessions, 1);
  assert.equal(server.ended.length, 1);
});

test('a device that restarts during its handshake (a wrong key, then the right one, from the same port) is not held until the deadline', async () => {
  const server = await echoServer({ handshakeTimeoutMs: 10000 });
  const listenPort = await freeUdpPort();
  await assert.rejects(client(server.port, { listenPort, key: 'not-the-key', timeout: 1500 }));
  assert.equal(server.stats().handshaking, 1, 'the first handshake is still waiting for its deadline');
  const second = await client(server.port, { listenPort, timeout: 3000 });
  assert.equal(await second.ask('x'), 'dev-a:x');
  assert.equal(server.stats().replaced, 1);
  assert.equal(server.stats().handshaking, 0);
});

test('a late copy of the ClientHello that opened a session, and forged short records, leave it alone', async () => {
  const server = await echoServer();
  const hellos = [];
  const proxy = await proxyTo(server.port, { tap: (datagram, from) => { if (datagram[0] === 22 && datagram[13] === 1) hellos.push({ datagram, from }); } });
  const a = await client(proxy.port);
  assert.equal(await a.ask('before'), 'dev-a:before');
  assert.equal(hellos.length, 2, 'the ClientHello, then the one with the cookie');
  const { from } = hellos[1];
  proxy.inject(from, hellos[1].datagram); // network duplicate, or a replay by whoever saw it
  proxy.inject(from, hellos[0].datagram);
  for (let length = 1; length < 30; length++) {
    const forged = Buffer.alloc(13 + length, 0x41);
    forged[0] = 23; // application data, epoch 1, garbage that OpenSSL 3.0 would answer with a fatal alert if too short
    forged.writeUInt16BE(0xfefd, 1);
    forged.writeUInt16BE(1, 3);
    forged.writeUInt16BE(length, 11);
    proxy.inject(from, forged);
  }
  await sleep(200);
  assert.equal(await a.ask('after'), 'dev-a:after');
  assert.equal(server.stats().replaced, 0);
  assert.equal(server.stats().sessions, 1);
  assert.deepEqual(server.ended, []);
});

test('a PSK that is not in memory is fetched before OpenSSL needs it; an identity the store does not know fails', async () => {
  const fetched = new Set();
  const slowKeys = {
    pskOf: (identity) => (fetched.has(identity) ? KEYS.get(identity) ?? null : undefined),
    fetchPsk: async (identity) => {
      await sleep(100);
      fetched.add(identity);
    },
  };
  const server = await echoServer({}, slowKeys);
  const b = await client(server.port, { identity: 'dev-b' });
  assert.equal(await b.ask('x'), 'dev-b:x');
  assert.ok(fetched.has('dev-b'));
  await assert.rejects(client(server.port, { identity: 'stranger', key: 'k' }));
  await waitUntil(() => server.stats().handshaking === 0, 3000, 20);
  assert.equal(server.stats().handshakesFailed.unknown_identity, 1);
  assert.equal(server.stats().sessions, 1);
});

test('an idle session ends with a close_notify the device hears; it can shake hands again', async () => {
  const server = await echoServer({ sessionIdleMs: 1000 });
  const a = await client(server.port);
  assert.equal(await a.ask('x'), 'dev-a:x');
  assert.ok(await waitUntil(() => server.stats().expired === 1, 4000, 50), 'expired');
  assert.ok(await waitUntil(() => a.closed, 2000, 20), 'the client heard close_notify');
  assert.equal(server.stats().sessions, 0);
  assert.equal(server.ended.length, 1);
  const again = await client(server.port);
  assert.equal(await again.ask('y'), 'dev-a:y');
});

test('a wrong key: no session, and the handshake deadline frees it as timeout_after_key_exchange', async () => {
  const server = await echoServer({ handshakeTimeoutMs: 1500 });
  await assert.rejects(client(server.port, { key: 'not-the-key', timeout: 2500 }));
  assert.ok(await waitUntil(() => server.stats().handshaking === 0, 3000, 50));
  assert.equal(server.stats().handshakesFailed.timeout_after_key_exchange, 1, JSON.stringify(server.stats()));
  assert.equal(server.stats().sessions, 0);
});

test('past maxSessions a handshake is refused, counted and logged; the sessions in place keep working', async () => {
  const server = await echoServer({ maxSessions: 2 });
  const a = await client(server.port, { identity: 'dev-a' });
  const b = await client(server.port, { identity: 'dev-b' });
  await assert.rejects(client(server.port, { identity: 'dev-c', timeout: 1500 }));
  assert.ok(server.stats().refusedFull >= 1);
  assert.ok(server.logs.some((line) => /refused a handshake .*coaps\.maxSessions/.test(line)), server.logs.join('\n'));
  assert.equal(await a.ask('a'), 'dev-a:a');
  assert.equal(await b.ask('b'), 'dev-b:b');
});
