'use strict';
/**
 * Kuzzle realtime over CoAP Observe, end to end: a real Kuzzle 2.56 (test/kuzzle-host) with this
 * plugin; devices are coap-client-notls and raw UDP endpoints; documents are written over
 * Kuzzle's HTTP API; Kuzzle's own subscription count (realtime:count) tells whether a relation's
 * end reached Kuzzle.
 *
 * Two hosts, booted together:
 * - `main`: NON notifications (default), bindToken on, enabled + realtimeNotifications set
 *   explicitly (Kuzzle then tells the plugin when a token expires);
 * - `con`: every notification CON with a short retransmission (200 ms, 2 retransmissions), bindToken off.
 *
 *   npm run build && node --test --test-concurrency=1 test/e2e/coap-realtime.test.js
 */
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const { startKuzzleHost } = require('../kuzzle-host');
const { killAll, spawnCoapClient } = require('../support/peers');
const { CF } = require('../support/raw');
const { sleep } = require('../support/util');
const { encodeCbor, kuzzleHttp, lineJson, rawEndpoint, waitUntil } = require('./helpers');

const INDEX = 'rt';
const CON_RETRANSMISSION = { ackTimeoutMs: 200, ackRandomFactor: 1, maxRetransmit: 2 };

let main;
let con;
const raws = new Set();

before(async () => {
  // startKuzzleHost links the plugin synchronously before its first await: the second start finds it linked.
  const started = await Promise.allSettled([
    startKuzzleHost({ coap: { enabled: true, realtimeNotifications: true, bindToken: true } }),
    startKuzzleHost({ coap: { bindToken: false, observe: { notificationType: 'con' }, retransmission: CON_RETRANSMISSION } }),
  ]);
  [main, con] = started.map((s) => (s.status === 'fulfilled' ? s.value : undefined));
  const failed = started.find((s) => s.status === 'rejected');
  if (failed) throw failed.reason;
  for (const host of [main, con]) {
    host.http = kuzzleHttp(host);
    await host.http.ok({ controller: 'index', action: 'create', index: INDEX });
  }
});

after(async () => {
  await killAll();
  for (const endpoint of raws) await endpoint.close();
  await Promise.all([main?.stop(), con?.stop()]);
});

async function raw(host, behaviour) {
  const endpoint = await rawEndpoint(host.coapPort, behaviour);
  raws.add(endpoint);
  return endpoint;
}

async function collection(host, name) {
  await host.http.ok({ controller: 'collection', action: 'create', index: INDEX, collection: name });
  return name;
}

async function createDocument(host, name, body, id) {
  return host.http.ok({ controller: 'document', action: 'create', index: INDEX, collection: name, _id: id, body });
}

/** Kuzzle's own count of the subscriptions (connections) of a room. */
async function roomCount(host, roomId) {
  return (await host.http.ok({ controller: 'realtime', action: 'count', body: { roomId } })).count;
}

/** Waits until the room's count is `expected`; returns the last count. */
async function countBecomes(host, roomId, expected, ms = 5000) {
  let last;
  await waitUntil(async () => (last = await roomCount(host, roomId)) === expected, ms);
  return last;
}

const newToken = () => crypto.randomBytes(4);

/** GET (or FETCH with a filter) /api/realtime/subscribe with Observe: 0 from a raw endpoint. */
async function register(endpoint, name, { token = newToken(), filter, jwt, confirmable = false, format = CF.CBOR } = {}) {
  const query = [`index=${INDEX}`, `collection=${name}`];
  if (jwt !== undefined) query.push(`jwt=${jwt}`);
  const response = await endpoint.request({
    method: filter === undefined ? 'GET' : 'FETCH',
    path: '/api/realtime/subscribe',
    query,
    observe: 0,
    token,
    confirmable,
    accept: format,
    ...(filter === undefined ? {} : { payload: encodeCbor(filter), contentFormat: CF.CBOR }),
  });
  assert.equal(response.code, '2.05', JSON.stringify(response.body));
  assert.equal(typeof response.observe, 'number', 'the registration answer carries Observe');
  const { roomId, channel } = response.body.result;
  return { token, roomId, channel, answer: response };
}

/** Notifications of a relation (its token) for document `id`, after message index `from`. */
function notificationsFor(endpoint, token, id, from = 0) {
  return endpoint.ofToken(token, from).filter((m) => m.observe !== undefined && m.body?.result?._id === id);
}

/**
 * Creates a document that a witness relation must hear; once it did (and a little more), asserts
 * the ended relation heard nothing since `mark`.
 */
async function assertSilent(host, name, { endpoint, token, mark }, witness) {
  const id = `after-${crypto.randomBytes(3).toString('hex')}`;
  const witnessMark = witness.endpoint.messages.length;
  await createDocument(host, name, { probe: true }, id);
  await witness.endpoint.waitFor((m) => m.tokenHex === witness.token.toString('hex') && m.body?.result?._id === id, 3000, { from: witnessMark });
  await sleep(300);
  assert.deepEqual(endpoint.ofToken(token, mark).map((m) => `${m.code} ${m.type} obs=${m.observe}`), [], 'nothing after the relation ended');
}

test('coap-client observes a collection: the registration answer, then a notification within a second of the HTTP create', async () => {
  const name = await collection(main, 'live');
  const client = spawnCoapClient(['-s', '10', '-B', '12', '-w', '-A', '50', '-m', 'get',
    `coap://127.0.0.1:${main.coapPort}/api/realtime/subscribe?index=${INDEX}&collection=${name}`]);
  try {
    const registration = lineJson(await client.waitLine((l) => l.stream === 'stdout' && l.text.includes('"roomId"'), 5000));
    assert.equal(registration.status, 200);
    const { roomId, channel } = registration.result;
    assert.equal(await roomCount(main, roomId), 1);

    const from = client.lines.length;
    const createdAt = Date.now();
    const created = await createDocument(main, name, { kind: 'a', temp: 21.5 });
    const line = await client.waitLine((l) => l.text.includes('"document"'), 3000, from);
    const delay = line.at - createdAt;
    assert.ok(delay < 1000, `notification ${delay} ms after the create`);
    const notification = lineJson(line);
    assert.equal(notification.type, 'document');
    assert.equal(notification.action, 'create');
    assert.equal(notification.result._id, created._id);
    assert.equal(notification.result._source.temp, 21.5);
    assert.equal(notification.room, channel);
    assert.equal(notification.index, INDEX);
    assert.equal(notification.collection, name);
  } finally {
    await client.kill();
  }
});

test('FETCH with a Koncorde filter: matching documents are notified, others are not', async () => {
  const name = await collection(main, 'filtered');
  const client = spawnCoapClient(['-s', '10', '-B', '12', '-w', '-A', '50', '-m', 'fetch', '-t', '50', '-e', '{"equals":{"kind":"a"}}',
    `coap://127.0.0.1:${main.coapPort}/api/realtime/subscribe?index=${INDEX}&collection=${name}`]);
  try {
    const registration = lineJson(await client.waitLine((l) => l.stream === 'stdout' && l.text.includes('"roomId"'), 5000));
    assert.equal(registration.status, 200);
    const from = client.lines.length;
    await createDocument(main, name, { kind: 'b' }, 'b1');
    await createDocument(main, name, { kind: 'a' }, 'a1');
    await createDocument(main, name, { kind: 'b' }, 'b2');
    await createDocument(main, name, { kind: 'a', more: 1 }, 'a2');
    await client.waitLine((l) => l.text.includes('"a2"'), 3000, from);
    await sleep(300);
    const ids = client.lines.slice(from).filter((l) => l.text.includes('"document"')).map((l) => lineJson(l).result._id);
    assert.deepEqual(ids, ['a1', 'a2']);
  } finally {
    await client.kill();
  }
});

/** A relation that stays on the collection, to show notifications still flow, and the count before. */
async function witness(host, name) {
  const endpoint = await raw(host);
  const relation = await register(endpoint, name);
  return { endpoint, ...relation };
}

test('ending a relation by deregistration (Observe: 1) ends its Kuzzle subscription', async () => {
  const name = await collection(main, 'deregistered');
  const other = await witness(main, name);
  const before = await roomCount(main, other.roomId);
  assert.equal(before, 1);

  const device = await raw(main);
  const { token, roomId } = await register(device, name);
  assert.equal(roomId, other.roomId, 'same filter, same room');
  assert.equal(await roomCount(main, roomId), before + 1);
  await createDocument(main, name, { n: 1 }, 'd1');
  const n1 = await device.waitFor((m) => m.tokenHex === token.toString('hex') && m.body?.result?._id === 'd1');
  await createDocument(main, name, { n: 2 }, 'd2');
  const n2 = await device.waitFor((m) => m.tokenHex === token.toString('hex') && m.body?.result?._id === 'd2');
  assert.ok(n1.observe > 0 && n2.observe > n1.observe, `Observe numbers increase: ${n1.observe}, ${n2.observe}`);

  const answer = await device.request({ method: 'GET', path: '/api/realtime/subscribe', query: [`index=${INDEX}`, `collection=${name}`], observe: 1, token, confirmable: true });
  assert.equal(answer.code, '2.05');
  assert.equal(answer.observe, undefined, 'a deregistration is answered without Observe');
  assert.equal(await countBecomes(main, roomId, before), before, 'Kuzzle subscription count back to its value before');
  await assertSilent(main, name, { endpoint: device, token, mark: device.messages.length }, other);
});

test('ending a relation by answering a notification with RST ends its Kuzzle subscription', async () => {
  const name = await collection(main, 'reset');
  const other = await witness(main, name);
  const before = await roomCount(main, other.roomId);

  const device = await raw(main);
  const { token, roomId } = await register(device, name);
  assert.equal(await roomCount(main, roomId), before + 1);
  // From now on, every notification gets a RST (NON by default; one in conEvery is a CON, from a random phase).
  device.onNon = 'rst';
  device.onCon = 'rst';
  await createDocument(main, name, { n: 1 }, 'r1');
  await device.waitFor((m) => m.tokenHex === token.toString('hex') && m.body?.result?._id === 'r1');
  assert.equal(await countBecomes(main, roomId, before), before, 'Kuzzle subscription count back to its value before');
  await assertSilent(main, name, { endpoint: device, token, mark: device.messages.length }, other);
});

test('CON notifications never acknowledged end every relation of the device and their Kuzzle subscriptions', async () => {
  const name = await collection(con, 'unacknowledged');
  const second = await collection(con, 'unacknowledged-2');
  const other = await witness(con, name); // acknowledges
  const before = await roomCount(con, other.roomId);

  const device = await raw(con, { onCon: 'ignore' });
  const first = await register(device, name, { confirmable: true });
  const next = await register(device, second, { confirmable: true });
  assert.equal(await roomCount(con, first.roomId), before + 1);
  assert.equal(await roomCount(con, next.roomId), 1);

  const createdAt = Date.now();
  await createDocument(con, name, { n: 1 }, 'c1');
  const notification = await device.waitFor((m) => m.tokenHex === first.token.toString('hex') && m.body?.result?._id === 'c1');
  assert.equal(notification.type, 'CON');
  const witnessed = await other.endpoint.waitFor((m) => m.tokenHex === other.token.toString('hex') && m.body?.result?._id === 'c1');
  assert.equal(witnessed.type, 'CON');

  // 1 + maxRetransmit copies, 200, 400 ms apart, then the endpoint is given up
  const { ackTimeoutMs, maxRetransmit } = CON_RETRANSMISSION;
  const giveUp = ackTimeoutMs * (2 ** (maxRetransmit + 1) - 1);
  assert.equal(await countBecomes(con, first.roomId, before, giveUp + 3000), before, 'Kuzzle subscription count back to its value before');
  const endedAfter = Date.now() - createdAt;
  assert.ok(endedAfter >= giveUp - 100, `ended after ${endedAfter} ms, before the retransmissions were over (${giveUp} ms)`);
  const copies = device.messages.filter((m) => m.messageId === notification.messageId && m.tokenHex === notification.tokenHex);
  assert.equal(copies.length, 1 + maxRetransmit, 'the notification was retransmitted');
  assert.equal(await countBecomes(con, next.roomId, 0), 0, 'the other relation of the unreachable device ended too');

  await assertSilent(con, name, { endpoint: device, token: first.token, mark: device.messages.length }, other);
});

test('realtime:unsubscribe over CoAP ends the relation with a final non-2.xx notification without Observe', async () => {
  const name = await collection(main, 'unsubscribed');
  const other = await witness(main, name);
  const before = await roomCount(main, other.roomId);

  const device = await raw(main);
  const { token, roomId } = await register(device, name);
  assert.equal(await roomCount(main, roomId), before + 1);
  const mark = device.messages.length;
  const answer = await device.request({ path: '/api/realtime/unsubscribe', payload: encodeCbor({ roomId }), contentFormat: CF.CBOR });
  assert.equal(answer.code, '2.05', JSON.stringify(answer.body));
  assert.equal(answer.body.result.roomId, roomId);

  const final = await device.waitFor((m) => m.tokenHex === token.toString('hex'), 3000, { from: mark });
  assert.notEqual(final.code.slice(0, 2), '2.', `final notification ${final.code}`);
  assert.equal(final.observe, undefined, 'the final notification has no Observe option');
  assert.equal(final.body.status, Number(final.code.replace('.', '')));
  assert.equal(await countBecomes(main, roomId, before), before, 'Kuzzle subscription count back to its value before');
  await assertSilent(main, name, { endpoint: device, token, mark: device.messages.length }, other);
});

test('1,000 observers (100 endpoints x 10 tokens) all receive one notification of a document created over HTTP', async () => {
  const name = await collection(main, 'crowd');
  const endpoints = [];
  for (let i = 0; i < 100; i++) endpoints.push(await raw(main));
  const relations = [];
  // registrations, 20 endpoints at a time, each sending its 10 at once
  for (let i = 0; i < endpoints.length; i += 20) {
    await Promise.all(endpoints.slice(i, i + 20).map(async (endpoint) => {
      const registered = await Promise.all(Array.from({ length: 10 }, () => register(endpoint, name)));
      for (const relation of registered) relations.push({ endpoint, ...relation });
    }));
  }
  assert.equal(relations.length, 1000);
  const { roomId } = relations[0];
  assert.ok(relations.every((r) => r.roomId === roomId));
  assert.equal(await roomCount(main, roomId), 100, 'one Kuzzle subscription per endpoint (connection)');

  const createdAt = Date.now();
  await createDocument(main, name, { crowd: true }, 'everyone');
  const heard = () => relations.filter((r) => notificationsFor(r.endpoint, r.token, 'everyone').length > 0).length;
  await waitUntil(() => heard() === 1000, 10000);
  const tookMs = Date.now() - createdAt;
  assert.equal(heard(), 1000, `${heard()} of 1000 relations notified`);
  await sleep(300);
  assert.ok(relations.every((r) => notificationsFor(r.endpoint, r.token, 'everyone').length === 1), 'exactly one notification each');
  assert.ok(tookMs < 5000, `all notified in ${tookMs} ms`);

  // deregistrations: 9 of each endpoint's 10 relations leave its Kuzzle subscription in place, the last ends it
  const deregister = async (list) => {
    for (let i = 0; i < list.length; i += 200) {
      await Promise.all(list.slice(i, i + 200).map(async ({ endpoint, token }) => {
        const answer = await endpoint.request({ method: 'GET', path: '/api/realtime/subscribe', query: [`index=${INDEX}`, `collection=${name}`], observe: 1, token, confirmable: false });
        assert.equal(answer.code, '2.05');
      }));
    }
  };
  const lastOfEach = new Map(relations.map((r) => [r.endpoint, r]));
  await deregister(relations.filter((r) => lastOfEach.get(r.endpoint) !== r));
  await sleep(200);
  assert.equal(await roomCount(main, roomId), 100, 'an endpoint with a relation left keeps its subscription');
  await deregister([...lastOfEach.values()]);
  assert.equal(await countBecomes(main, roomId, 0), 0);
});

test('bindToken on: after auth:login over CoAP, requests of that endpoint without jwt are the user\'s; off: anonymous', async () => {
  for (const host of [main, con]) {
    await host.http.ok({
      controller: 'security',
      action: 'createUser',
      _id: 'bob',
      body: { content: { profileIds: ['default'] }, credentials: { local: { username: 'bob', password: 'Bob-Secret-1' } } },
    });
    await collection(host, 'sessions');
  }
  const login = async (endpoint) => {
    const { response: answer } = await endpoint.requestWithEcho({ path: '/api/auth/login', query: ['strategy=local'], payload: encodeCbor({ username: 'bob', password: 'Bob-Secret-1' }), contentFormat: CF.CBOR });
    assert.equal(answer.code, '2.05', JSON.stringify(answer.body));
    return answer.body.result;
  };
  const authorOf = async (endpoint) => {
    const answer = await endpoint.request({ path: '/api/document/create', query: [`index=${INDEX}`, 'collection=sessions'], payload: encodeCbor({ at: Date.now() }), contentFormat: CF.CBOR });
    assert.equal(answer.code, '2.05', JSON.stringify(answer.body));
    return answer.body.result._source._kuzzle_info.author;
  };

  const device = await raw(main);
  assert.equal(await authorOf(device), '-1', 'anonymous before logging in');
  assert.equal((await login(device))._id, 'bob');
  assert.equal(await authorOf(device), 'bob', 'bindToken on: the endpoint\'s token is used');
  const stranger = await raw(main);
  assert.equal(await authorOf(stranger), '-1', 'another endpoint is not logged in');
  const { response: logout } = await device.requestWithEcho({ path: '/api/auth/logout' });
  assert.equal(logout.code, '2.05', JSON.stringify(logout.body));
  assert.equal(await authorOf(device), '-1', 'auth:logout unbinds');

  const unbound = await raw(con);
  assert.equal((await login(unbound))._id, 'bob');
  assert.equal(await authorOf(unbound), '-1', 'bindToken off: still anonymous');
});

test('TokenExpired: a relation made with a token that expires gets a final 4.01 and its subscription ends', async () => {
  await main.http.ok({
    controller: 'security',
    action: 'createUser',
    _id: 'carol',
    body: { content: { profileIds: ['default'] }, credentials: { local: { username: 'carol', password: 'Carol-Secret-1' } } },
  });
  const name = await collection(main, 'expiring');
  const other = await witness(main, name);
  const before = await roomCount(main, other.roomId);

  const device = await raw(main);
  const { response: answer } = await device.requestWithEcho({
    path: '/api/auth/login', query: ['strategy=local', 'expiresIn=2s'], payload: encodeCbor({ username: 'carol', password: 'Carol-Secret-1' }), contentFormat: CF.CBOR,
  });
  assert.equal(answer.code, '2.05', JSON.stringify(answer.body));
  const { jwt, expiresAt } = answer.body.result;
  assert.ok(expiresAt - Date.now() <= 2100, 'a 2 s token');

  const { token, roomId } = await register(device, name, { jwt });
  assert.equal(await roomCount(main, roomId), before + 1);
  await createDocument(main, name, { n: 1 }, 'e1');
  await device.waitFor((m) => m.tokenHex === token.toString('hex') && m.body?.result?._id === 'e1');

  const mark = device.messages.length;
  const final = await device.waitFor((m) => m.tokenHex === token.toString('hex'), expiresAt - Date.now() + 3000, { from: mark });
  assert.equal(final.code, '4.01', JSON.stringify(final.body));
  assert.equal(final.observe, undefined, 'final: no Observe option');
  assert.ok(final.at >= expiresAt - 50, `ended ${expiresAt - final.at} ms before the token expired`);
  assert.equal(final.body.error.id, 'security.token.expired');
  assert.equal(await countBecomes(main, roomId, before), before, 'Kuzzle subscription count back to its value before');
  await assertSilent(main, name, { endpoint: device, token, mark: device.messages.length }, other);
});

test('bindToken: once the bound token expired, a request without jwt gets 4.01, not anonymous rights', async () => {
  await main.http.ok({
    controller: 'security',
    action: 'createUser',
    _id: 'dave',
    body: { content: { profileIds: ['default'] }, credentials: { local: { username: 'dave', password: 'Dave-Secret-1' } } },
  });
  const name = await collection(main, 'bound-expiry');
  const device = await raw(main);
  const { response: login } = await device.requestWithEcho({
    path: '/api/auth/login', query: ['strategy=local', 'expiresIn=2s'], payload: encodeCbor({ username: 'dave', password: 'Dave-Secret-1' }), contentFormat: CF.CBOR,
  });
  assert.equal(login.code, '2.05', JSON.stringify(login.body));
  const { expiresAt } = login.body.result;
  const create = () => device.request({ path: '/api/document/create', query: [`index=${INDEX}`, `collection=${name}`], payload: encodeCbor({ at: Date.now() }), contentFormat: CF.CBOR });
  const bound = await create();
  assert.equal(bound.body.result._source._kuzzle_info.author, 'dave');

  await sleep(expiresAt - Date.now() + 1000); // Kuzzle's token manager has told the plugin (TokenExpired)
  const expired = await create();
  assert.equal(expired.code, '4.01',
    `after the bound token expired: ${expired.code}, author ${JSON.stringify(expired.body.result?._source?._kuzzle_info?.author)}`);
  assert.equal(expired.body.error.id, 'security.token.expired');
});
