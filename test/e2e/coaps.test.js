'use strict';
/**
 * coaps (issue 11), end to end on a real Kuzzle 2.56: DTLS 1.2 with pre-shared keys from a
 * credentials file, the device's PSK identity naming its Kuzzle identity (an API key), against
 * two independent DTLS stacks (libcoap's coap-client-openssl and coap-client-gnutls) and
 * node-dtls-client; and X.509 client certificates (ECDHE-ECDSA-AES128-CCM8) on the same listener,
 * the certificate's subject naming the Kuzzle identity. Kuzzle tells who ran a request (`_kuzzle_info.author`,
 * auth:getCurrentUser); the plugin's stats() tells what the DTLS layer kept.
 *
 *   npm run build && node --test test/e2e/coaps.test.js
 */
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const dgram = require('node:dgram');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { dtls } = require('node-dtls-client');
const coapPacket = require('coap-packet');
const { startKuzzleHost } = require('../kuzzle-host');
const { createTestPki } = require('../support/certificates');
const { coapClient, killAll, spawnCoapClient } = require('../support/peers');
const { createUdpProxy } = require('../support/udpProxy');
const { coapJson, kuzzleHttp, waitUntil } = require('./helpers');

const INDEX = 'secure';
const COLLECTION = 'things';
const DEVICE = { identity: 'device-1', psk: 'device-1-secret', kuid: 'device-1' };
const CERT_DEVICE = { cn: 'device-x509', subject: 'CN=device-x509,O=Kuzzle CoAP tests', kuid: 'device-x509' };
const CLIENTS = ['coap-client-openssl', 'coap-client-gnutls'];

let host;
let http;
let dir;
let credentialsFile;
let apiKey;
let certApiKey;
let pki;

/** The credentials file as the tests want it by default. */
const allCredentials = () => [
  { identity: DEVICE.identity, psk: DEVICE.psk, apiKey },
  { subject: CERT_DEVICE.subject, apiKey: certApiKey },
];

function writeCredentials(devices) {
  const next = `${credentialsFile}.next`;
  fs.writeFileSync(next, JSON.stringify({ devices }));
  fs.renameSync(next, credentialsFile);
}

/** Waits for the plugin to reload the credentials file after `count` earlier reloads. */
async function reloaded(count) {
  assert.ok(await waitUntil(async () => (await reloads()) > count, 8000), 'the credentials file was reloaded');
}
const reloads = async () => (await host.kuzzle.coapStats()).credentials[0].reloads;
const dtlsStats = async () => (await host.kuzzle.coapStats()).secureTransport.dtls;

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'coaps-e2e-'));
  credentialsFile = path.join(dir, 'devices.json');
  writeCredentials([]);
  pki = createTestPki(dir, { clients: [CERT_DEVICE.cn] });
  host = await startKuzzleHost({
    coap: {
      coaps: {
        enabled: true,
        handshakeTimeoutMs: 4000,
        certificate: pki.server.cert,
        privateKey: pki.server.key,
        ca: pki.ca,
        verifyClient: 'require',
        // Both stores: the file first, then a Kuzzle collection read with a service API key from a file.
        credentials: { file: credentialsFile, index: 'devices', collection: 'credentials', apiKeyFile: path.join(dir, 'service.key'), cacheTtlMs: 2000 },
      },
    },
  });
  http = kuzzleHttp(host);
  await http.ok({ controller: 'index', action: 'create', index: INDEX });
  await http.ok({ controller: 'collection', action: 'create', index: INDEX, collection: COLLECTION });
  await http.ok({
    controller: 'security', action: 'createUser', _id: DEVICE.kuid,
    body: { content: { profileIds: ['default'] }, credentials: { local: { username: DEVICE.kuid, password: 'Device-Password-1' } } },
  });
  const key = await http.ok({ controller: 'security', action: 'createApiKey', userId: DEVICE.kuid, refresh: 'wait_for', body: { description: 'coaps device-1' } });
  apiKey = key._source.token;
  await http.ok({ controller: 'security', action: 'createUser', _id: CERT_DEVICE.kuid, body: { content: { profileIds: ['default'] } } });
  const certKey = await http.ok({ controller: 'security', action: 'createApiKey', userId: CERT_DEVICE.kuid, refresh: 'wait_for', body: { description: 'coaps x509' } });
  certApiKey = certKey._source.token;
  const before = await reloads();
  writeCredentials(allCredentials());
  await reloaded(before);

  await http.ok({ controller: 'index', action: 'create', index: 'devices' });
  await http.ok({ controller: 'collection', action: 'create', index: 'devices', collection: 'credentials' });
  await http.ok({ controller: 'security', action: 'createUser', _id: 'coap-service', body: { content: { profileIds: ['default'] } } });
  const service = await http.ok({ controller: 'security', action: 'createApiKey', userId: 'coap-service', refresh: 'wait_for', body: { description: 'coaps credentials reader' } });
  fs.writeFileSync(path.join(dir, 'service.key'), service._source.token);
});

after(async () => {
  await killAll();
  await host?.stop();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

const url = (pathAndQuery) => `coaps://127.0.0.1:${host.coapsPort}${pathAndQuery}`;
const psk = ({ identity, key } = { identity: DEVICE.identity, key: DEVICE.psk }) => ['-u', identity, '-k', key];

for (const binary of CLIENTS) {
  test(`${binary}, PSK: server:now, a document created without jwt whose author is the credential's user, auth:getCurrentUser`, async () => {
    const now = await coapJson(url('/api/server/now'), { binary, extra: psk() });
    assert.equal(now.code, '2.xx', JSON.stringify(now.body));
    assert.ok(Math.abs(now.body.result.now - Date.now()) < 60000, JSON.stringify(now.body));

    const created = await coapJson(url(`/api/document/create?index=${INDEX}&collection=${COLLECTION}&refresh=wait_for`), { binary, extra: psk(), json: { by: binary } });
    assert.equal(created.code, '2.xx', JSON.stringify(created.body));
    const stored = await http.ok({ controller: 'document', action: 'get', index: INDEX, collection: COLLECTION, _id: created.body.result._id });
    assert.equal(stored._source._kuzzle_info.author, DEVICE.kuid);
    assert.equal(stored._source.by, binary);

    const me = await coapJson(url('/api/auth/getCurrentUser'), { binary, extra: psk() });
    assert.equal(me.body.result._id, DEVICE.kuid);
  });
}

test('a token sent over coaps wins over the identity\'s API key, as on plain CoAP', async () => {
  const me = await coapJson(url('/api/auth/getCurrentUser'), { binary: 'coap-client-openssl', extra: psk(), jwt: certApiKey });
  assert.equal(me.body.result._id, CERT_DEVICE.kuid);
});

test('coap-client-openssl: a block-wise answer larger than one DTLS record arrives whole', async () => {
  const big = { text: 'x'.repeat(5000) };
  const { _id } = await http.ok({ controller: 'document', action: 'create', index: INDEX, collection: COLLECTION, body: big, refresh: 'wait_for' });
  const got = await coapJson(url(`/api/document/get?index=${INDEX}&collection=${COLLECTION}&_id=${_id}`), { binary: 'coap-client-openssl', extra: psk() });
  assert.equal(got.code, '2.xx');
  assert.equal(got.body.result._source.text, big.text);
});

test('coap-client-gnutls observes over coaps: a document written over HTTP is notified', async () => {
  const observer = spawnCoapClient(['-s', '15', '-B', '16', '-w', '-A', '50', '-m', 'get', ...psk(),
    url(`/api/realtime/subscribe?index=${INDEX}&collection=${COLLECTION}`)], { binary: 'coap-client-gnutls' });
  try {
    await observer.waitLine((line) => /"roomId"/.test(line.text), 8000);
    const { _id } = await http.ok({ controller: 'document', action: 'create', index: INDEX, collection: COLLECTION, body: { observed: true } });
    const line = await observer.waitLine((l) => l.text.includes(_id), 8000);
    assert.match(line.text, /"action":"create"/);
  } finally {
    await observer.kill();
  }
});

test('an unknown identity and a wrong key: no session, nothing executed, reasons counted', async () => {
  const before = await dtlsStats();
  const documents = async () => (await http.ok({ controller: 'document', action: 'count', index: INDEX, collection: COLLECTION })).count;
  const count = await documents();
  const unknown = await coapJson(url(`/api/document/create?index=${INDEX}&collection=${COLLECTION}`), {
    binary: 'coap-client-openssl', extra: psk({ identity: 'nobody', key: 'whatever' }), json: { intruder: true }, timeoutMs: 15000,
  }).catch((error) => ({ error }));
  assert.ok(unknown.error, 'the client got no answer');
  const wrong = await coapJson(url(`/api/document/create?index=${INDEX}&collection=${COLLECTION}`), {
    binary: 'coap-client-gnutls', extra: psk({ identity: DEVICE.identity, key: 'not-the-key' }), json: { intruder: true }, timeoutMs: 15000,
  }).catch((error) => ({ error }));
  assert.ok(wrong.error, 'the client got no answer');
  await waitUntil(async () => (await dtlsStats()).handshaking === 0, 8000);
  const stats = await dtlsStats();
  assert.ok((stats.handshakesFailed.unknown_identity ?? 0) > (before.handshakesFailed.unknown_identity ?? 0), JSON.stringify(stats));
  const wrongKey = (s) => (s.handshakesFailed.wrong_key ?? 0) + (s.handshakesFailed.timeout_after_key_exchange ?? 0);
  assert.ok(wrongKey(stats) > wrongKey(before), JSON.stringify(stats));
  assert.equal(stats.sessions, before.sessions, 'no session kept');
  assert.equal(await documents(), count, 'nothing was executed');
});

test('2,000 cookieless ClientHellos from 20 ports leave no session and no handshake state', async () => {
  const hello = await captureClientHello();
  const before = await dtlsStats();
  const sockets = await Promise.all(Array.from({ length: 20 }, () => new Promise((resolve) => {
    const socket = dgram.createSocket('udp4');
    socket.bind(0, '127.0.0.1', () => resolve(socket));
  })));
  let answers = 0;
  let largest = 0;
  for (const socket of sockets) {
    socket.on('message', (reply) => {
      largest = Math.max(largest, reply.length);
      if (reply[0] === 22 && reply[13] === 3) answers++;
    });
  }
  try {
    for (let i = 0; i < 100; i++) {
      for (const socket of sockets) socket.send(hello, host.coapsPort, '127.0.0.1');
      await new Promise((resolve) => setImmediate(resolve));
    }
    await waitUntil(async () => (await dtlsStats()).cookieRounds - before.cookieRounds >= 1900, 5000);
    const stats = await dtlsStats();
    assert.ok(stats.cookieRounds - before.cookieRounds >= 1900, `HelloVerifyRequests: ${stats.cookieRounds - before.cookieRounds}`);
    assert.ok(answers >= 1900, `HelloVerifyRequests received: ${answers}`);
    assert.ok(largest <= hello.length, `no answer larger than the ClientHello it answers (no amplification): ${largest} > ${hello.length} B`);
    assert.equal(stats.sessions, before.sessions);
    assert.equal(stats.handshaking, 0);
  } finally {
    for (const socket of sockets) socket.close();
  }
});

test('node-dtls-client (CCM_8 and GCM): server:now as the credential\'s user', async () => {
  for (const cipher of ['TLS_PSK_WITH_AES_128_CCM_8', 'TLS_PSK_WITH_AES_128_GCM_SHA256']) {
    const answer = await dtlsRequest(cipher, '/api/auth/getCurrentUser');
    assert.equal(answer.code, '2.05', cipher);
    assert.equal(JSON.parse(answer.payload.toString()).result._id, DEVICE.kuid, cipher);
  }
});

test('revoking the credential (removed from the file) ends its live session; a new handshake is refused', async () => {
  const observer = spawnCoapClient(['-s', '30', '-B', '30', '-w', '-A', '50', '-m', 'get', ...psk(),
    url(`/api/realtime/subscribe?index=${INDEX}&collection=${COLLECTION}`)], { binary: 'coap-client-openssl' });
  try {
    await observer.waitLine((line) => /"roomId"/.test(line.text), 8000);
    const before = await dtlsStats();
    assert.ok(before.sessions >= 1);
    const count = await reloads();
    writeCredentials(allCredentials().filter((credential) => credential.identity !== DEVICE.identity));
    await reloaded(count);
    const after = await dtlsStats();
    // Every session is device-1's here (the observer's, and those of killed clients that sent no close_notify).
    assert.equal(after.revoked - before.revoked, before.sessions, JSON.stringify({ before, after }));
    assert.equal(after.sessions, 0);
    const refused = await coapJson(url('/api/server/now'), { binary: 'coap-client-openssl', extra: psk(), timeoutMs: 15000 }).catch((error) => ({ error }));
    assert.ok(refused.error, 'no answer without a credential');
  } finally {
    await observer.kill();
    const count = await reloads();
    writeCredentials(allCredentials());
    await reloaded(count);
  }
});

test('10% loss each way, handshake flights included: 12 coap-client runs each shake hands and create their document exactly once', async () => {
  const proxy = await createUdpProxy({ targetPort: host.coapsPort, dropRate: 0.1 });
  const marker = `lossy-${Date.now()}`;
  try {
    const run = (i) => coapJson(`coaps://127.0.0.1:${proxy.port}/api/document/create?index=${INDEX}&collection=${COLLECTION}`, {
      binary: CLIENTS[i % 2], extra: [...psk(), '-B', '60'], json: { marker, i }, timeoutMs: 70000,
    });
    const results = [];
    for (let batch = 0; batch < 4; batch++) results.push(...await Promise.all([0, 1, 2].map((j) => run(batch * 3 + j))));
    for (const result of results) assert.equal(result.code, '2.xx', JSON.stringify(result.body));
    const { count } = await http.ok({ controller: 'document', action: 'count', index: INDEX, collection: COLLECTION, body: { query: { match: { marker } } } });
    assert.equal(count, 12, 'each CON ran once');
    assert.ok(proxy.counts.droppedToServer > 0 && proxy.counts.droppedToClient > 0, JSON.stringify(proxy.counts));
  } finally {
    proxy.close();
  }
});

test('X.509 on the same listener: a CA-signed client certificate runs as its subject\'s user; none, or one the CA did not sign, is refused', async () => {
  const before = await dtlsStats();
  const x509 = (cert) => ['-R', pki.ca, ...(cert ? ['-c', cert.cert, '-j', cert.key] : [])];
  for (const binary of CLIENTS) {
    const me = await coapJson(url('/api/auth/getCurrentUser'), { binary, extra: x509(pki.clients[CERT_DEVICE.cn]) });
    assert.equal(me.code, '2.xx', `${binary}: ${JSON.stringify(me.body)}`);
    assert.equal(me.body.result._id, CERT_DEVICE.kuid, binary);
  }
  for (const [what, cert] of [['no certificate', null], ['a certificate the CA did not sign', pki.intruder]]) {
    const refused = await coapJson(url('/api/auth/getCurrentUser'), { binary: 'coap-client-openssl', extra: x509(cert), timeoutMs: 15000 })
      .catch((error) => ({ error }));
    assert.ok(refused.error, `${what}: no answer`);
  }
  const stats = await dtlsStats();
  assert.ok((stats.handshakesFailed.no_certificate ?? 0) > (before.handshakesFailed.no_certificate ?? 0), JSON.stringify(stats.handshakesFailed));
  assert.ok((stats.handshakesFailed.bad_certificate ?? 0) > (before.handshakesFailed.bad_certificate ?? 0), JSON.stringify(stats.handshakesFailed));
});

test('a credential in the Kuzzle collection: fetched during the handshake, the device runs as its user; deleted, its live session ends within cacheTtlMs', async () => {
  const identity = 'device-2';
  await http.ok({ controller: 'security', action: 'createUser', _id: identity, body: { content: { profileIds: ['default'] } } });
  const key = await http.ok({ controller: 'security', action: 'createApiKey', userId: identity, refresh: 'wait_for', body: { description: 'coaps device-2' } });
  await http.ok({
    controller: 'document', action: 'create', index: 'devices', collection: 'credentials', _id: `psk:${identity}`, refresh: 'wait_for',
    body: { identity, psk: 'device-2-secret', apiKey: key._source.token },
  });
  const device2 = psk({ identity, key: 'device-2-secret' });
  const me = await coapJson(url('/api/auth/getCurrentUser'), { binary: 'coap-client-gnutls', extra: device2 });
  assert.equal(me.body.result._id, identity);
  const stats = (await host.kuzzle.coapStats()).credentials[1];
  assert.equal(stats.collection, 'devices/credentials');
  assert.ok(stats.fetched >= 1 && stats.cached >= 1, JSON.stringify(stats));

  const observer = spawnCoapClient(['-s', '30', '-B', '30', '-w', '-A', '50', '-m', 'get', ...device2,
    url(`/api/realtime/subscribe?index=${INDEX}&collection=${COLLECTION}`)], { binary: 'coap-client-openssl' });
  try {
    const registered = await observer.waitLine((line) => /"roomId"/.test(line.text), 8000);
    const { roomId } = JSON.parse(registered.text).result;
    const subscribers = async () => (await http.ok({ controller: 'realtime', action: 'count', body: { roomId } })).count;
    assert.equal(await subscribers(), 1);
    const before = await dtlsStats();
    await http.ok({ controller: 'document', action: 'delete', index: 'devices', collection: 'credentials', _id: `psk:${identity}`, refresh: 'wait_for' });
    const deleted = Date.now();
    assert.ok(await waitUntil(async () => (await dtlsStats()).revoked > before.revoked, 6000), 'the session ended');
    assert.ok(Date.now() - deleted < 2000 + 1500, `within cacheTtlMs: ${Date.now() - deleted} ms`);
    assert.ok(await waitUntil(async () => (await subscribers()) === 0, 3000), 'its Kuzzle subscription ended with the session');
    const refused = await coapJson(url('/api/auth/getCurrentUser'), { binary: 'coap-client-openssl', extra: device2, timeoutMs: 15000 }).catch((error) => ({ error }));
    assert.ok(refused.error, 'no answer once the credential is deleted');
  } finally {
    await observer.kill();
  }
});

test('/.well-known/core over coaps lists the same resources as over plain CoAP', async () => {
  const get = (binary, base, extra = []) => coapClient(['-m', 'get', '-B', '5', ...extra, `${base}/.well-known/core`], { binary });
  const secure = await get('coap-client-openssl', `coaps://127.0.0.1:${host.coapsPort}`, psk());
  const plain = await get('coap-client-notls', `coap://127.0.0.1:${host.coapPort}`);
  const links = (run) => run.stdout.toString().split('\n').filter((line) => line.startsWith('<')).join('\n');
  assert.match(links(plain), /<\/api>/);
  assert.equal(links(secure), links(plain));
});

/** The first datagram node-dtls-client sends: a ClientHello without cookie. */
async function captureClientHello() {
  const trap = dgram.createSocket('udp4');
  await new Promise((resolve) => trap.bind(0, '127.0.0.1', resolve));
  const first = new Promise((resolve) => trap.once('message', resolve));
  const client = dtls.createSocket({ type: 'udp4', address: '127.0.0.1', port: trap.address().port, psk: { x: 'y' }, timeout: 1000 });
  client.on('error', () => {});
  try {
    return await first;
  } finally {
    client.close();
    trap.close();
  }
}

/** One CoAP request over node-dtls-client; resolves the decoded response. */
function dtlsRequest(cipher, pathname) {
  return new Promise((resolve, reject) => {
    const client = dtls.createSocket({
      type: 'udp4', address: '127.0.0.1', port: host.coapsPort, psk: { [DEVICE.identity]: DEVICE.psk }, timeout: 5000, ciphers: [cipher],
    });
    const timer = setTimeout(() => finish(new Error(`no answer over ${cipher}`)), 10000);
    const finish = (error, value) => {
      clearTimeout(timer);
      client.close();
      if (error) reject(error);
      else resolve(value);
    };
    client.on('error', (error) => finish(error));
    client.on('connected', () => {
      const options = pathname.split('/').filter(Boolean).map((part) => ({ name: 'Uri-Path', value: Buffer.from(part) }));
      options.push({ name: 'Accept', value: Buffer.from([50]) });
      client.send(coapPacket.generate({ messageId: 7, token: Buffer.from([1, 2, 3, 4]), code: '0.02', confirmable: true, options }));
    });
    client.on('message', (datagram) => {
      const packet = coapPacket.parse(datagram);
      finish(null, { code: packet.code, payload: packet.payload });
    });
  });
}
