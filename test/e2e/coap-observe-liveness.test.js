'use strict';
/**
 * Observe relations that survive real networks (issue 10), end to end on a real Kuzzle 2.56 with
 * `observe.maxAge: 4` and short retransmissions (200 ms, 2 retransmissions): Kuzzle's own
 * realtime:count tells what happened to the subscriptions.
 * - a device killed without deregistering loses its relation and subscription within the liveness
 *   bound, on a collection where nothing is published;
 * - re-registration on the same token (GET, FETCH, /channels/<channel>) keeps the relation and the
 *   subscription, Observe numbers go on, an event published during it arrives once.
 *
 *   npm run build && node --test test/e2e/coap-observe-liveness.test.js
 */
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const { startKuzzleHost } = require('../kuzzle-host');
const { CF } = require('../support/raw');
const { sleep } = require('../support/util');
const { encodeCbor, kuzzleHttp, rawEndpoint, waitUntil } = require('./helpers');

const INDEX = 'live';
const MAX_AGE_S = 4;
const RETRANSMISSION = { ackTimeoutMs: 200, ackRandomFactor: 1, maxRetransmit: 2 };
/** Heartbeat after at most 3/4 of Max-Age, found by the once-a-second sweep, then 200 + 400 + 800 ms of retransmissions. */
const LIVENESS_BOUND_MS = 0.75 * MAX_AGE_S * 1000 + 1000 + 1400;

let host;
const endpoints = new Set();

before(async () => {
  host = await startKuzzleHost({ coap: { observe: { maxAge: MAX_AGE_S }, retransmission: RETRANSMISSION } });
  host.http = kuzzleHttp(host);
  await host.http.ok({ controller: 'index', action: 'create', index: INDEX });
});

after(async () => {
  for (const endpoint of endpoints) await endpoint.close();
  await host?.stop();
});

async function device(behaviour) {
  const endpoint = await rawEndpoint(host.coapPort, behaviour);
  endpoints.add(endpoint);
  return endpoint;
}

async function collection(name) {
  await host.http.ok({ controller: 'collection', action: 'create', index: INDEX, collection: name });
  return name;
}

const create = (name, id) => host.http.ok({ controller: 'document', action: 'create', index: INDEX, collection: name, _id: id, body: { id } });
const roomCount = async (roomId) => (await host.http.ok({ controller: 'realtime', action: 'count', body: { roomId } })).count;

/** The registration request of `name` (GET, or FETCH with a filter). */
function registration(name, { token, filter }) {
  return {
    method: filter === undefined ? 'GET' : 'FETCH',
    path: '/api/realtime/subscribe',
    query: [`index=${INDEX}`, `collection=${name}`],
    observe: 0,
    token,
    confirmable: true,
    accept: CF.JSON,
    ...(filter === undefined ? {} : { payload: encodeCbor(filter), contentFormat: CF.CBOR }),
  };
}

/** Sends a request and resolves its piggybacked answer (by message ID: a notification on the same token may come first). */
async function answerOf(endpoint, request) {
  const from = endpoint.messages.length;
  const { messageId } = await endpoint.send(request);
  return endpoint.waitFor((m) => m.type === 'ACK' && m.messageId === messageId && m.code !== '0.00', 3000, { from, what: 'the answer' });
}

/** Document notifications of a token, in arrival order. */
const eventsOf = (endpoint, token) => endpoint.ofToken(token).filter((m) => m.code === '2.05' && m.body?.result?._id !== undefined && m.observe !== undefined);

test(`a device killed without deregistering loses its relation and its Kuzzle subscription within ${LIVENESS_BOUND_MS} ms, on a quiet collection`, async () => {
  const name = await collection('killed');
  const doomed = await device();
  const answer = await doomed.request(registration(name, { token: crypto.randomBytes(4) }));
  assert.equal(answer.code, '2.05');
  const { roomId } = answer.body.result;
  assert.equal(await roomCount(roomId), 1);
  const killedAt = Date.now();
  await doomed.close(); // gone without a word: its port answers nothing (loopback: ICMP, which the plugin ignores)
  endpoints.delete(doomed);
  assert.ok(await waitUntil(async () => (await roomCount(roomId)) === 0, LIVENESS_BOUND_MS + 2000), 'the subscription outlived the bound');
  const took = Date.now() - killedAt;
  assert.ok(took <= LIVENESS_BOUND_MS + 500, `ended after ${took} ms`);
});

for (const form of ['GET', 'FETCH']) {
  test(`${form} /api/realtime/subscribe again on the same token: one relation, one subscription, Observe numbers go on, an event published meanwhile arrives once`, async () => {
    const name = await collection(`again-${form.toLowerCase()}`);
    const filter = form === 'FETCH' ? { exists: 'id' } : undefined;
    const endpoint = await device();
    const token = crypto.randomBytes(4);
    const first = await endpoint.request(registration(name, { token, filter }));
    assert.equal(first.code, '2.05');
    const { roomId } = first.body.result;
    await create(name, 'before');
    await waitUntil(() => eventsOf(endpoint, token).length === 1, 3000);

    // The re-registration and a publication race: either order must give the event once.
    const [again] = await Promise.all([answerOf(endpoint, registration(name, { token, filter })), create(name, 'during')]);
    assert.equal(again.code, '2.05');
    assert.equal(await roomCount(roomId), 1, 'one Kuzzle subscription');
    await create(name, 'after');
    assert.ok(await waitUntil(() => eventsOf(endpoint, token).length >= 3, 3000), `events: ${eventsOf(endpoint, token).map((m) => m.body.result._id)}`);
    await sleep(300);
    const events = eventsOf(endpoint, token).filter((m) => m !== again);
    assert.deepEqual(events.map((m) => m.body.result._id).sort(), ['after', 'before', 'during'], 'each event once');
    const last = events.find((m) => m.body.result._id === 'after');
    assert.ok(again.observe > events[0].observe && last.observe > again.observe, 'Observe numbers go on across the re-registration');

    const off = await endpoint.request({ ...registration(name, { token, filter }), observe: 1 });
    assert.equal(off.code, '2.05');
    assert.ok(await waitUntil(async () => (await roomCount(roomId)) === 0, 3000));
  });
}

test('GET /channels/<channel> again on the same token keeps the relation and the subscription (no final 4.04)', async () => {
  const name = await collection('again-channel');
  const endpoint = await device();
  const joined = await endpoint.request({ method: 'POST', path: '/api/realtime/subscribe', query: [`index=${INDEX}`, `collection=${name}`], payload: {}, accept: CF.JSON, confirmable: true });
  assert.equal(joined.code, '2.05', JSON.stringify(joined.body));
  const { roomId, channel } = joined.body.result;
  const token = crypto.randomBytes(4);
  const observe = { method: 'GET', path: `/channels/${channel}`, observe: 0, token, confirmable: true, accept: CF.JSON };
  const first = await endpoint.request(observe);
  assert.equal(first.code, '2.05');
  const again = await endpoint.request(observe);
  assert.equal(again.code, '2.05');
  assert.ok(again.observe > first.observe);
  await sleep(300);
  assert.equal(await roomCount(roomId), 1);
  await create(name, 'c1');
  assert.ok(await waitUntil(() => eventsOf(endpoint, token).length === 1, 3000));
  await sleep(300);
  assert.deepEqual(endpoint.ofToken(token).filter((m) => m.code !== '2.05' && m.code !== '2.03').map((m) => m.code), [], 'no final notification');
});
