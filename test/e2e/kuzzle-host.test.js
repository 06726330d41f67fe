'use strict';

// The development/test Kuzzle host itself (test/kuzzle-host), without the CoAP
// plugin: boots, serves Kuzzle's HTTP API on the in-memory storage, stops
// cleanly. Run: node --test test/e2e/kuzzle-host.test.js

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const WebSocket = require('ws');
const { startKuzzleHost } = require('../kuzzle-host');

let host;
let jwt;

before(async () => {
  host = await startKuzzleHost({ installPlugin: false });
});

after(async () => {
  await host?.stop();
});

// One Kuzzle API call over HTTP (POST /_query); returns the whole response.
async function api(request, { token = jwt } = {}) {
  const response = await fetch(`${host.url}/_query`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify(request),
  });
  const body = await response.json();
  assert.equal(body.status, response.status);
  return body;
}

async function ok(request, options) {
  const { status, error, result } = await api(request, options);
  assert.equal(status, 200, `${request.controller}:${request.action}: ${error?.id} ${error?.message}`);
  return result;
}

const withoutMeta = ({ _kuzzle_info, ...content }) => content;

test('listens on free ports, without the CoAP protocol', () => {
  assert.ok(host.httpPort > 0 && host.httpPort !== 7512);
  assert.equal(host.coapPort, null, 'no CoAP port without the plugin');
  assert.ok(!host.protocols.includes('coap'), host.protocols.join());
  assert.equal(host.storage, process.env.ELASTICSEARCH_URL || 'memory');
});

test('server:now', async () => {
  const before = Date.now();
  const { now } = await ok({ controller: 'server', action: 'now' });
  assert.ok(now >= before - 1000 && now <= Date.now() + 1000);
});

test('anonymous (all rights while no admin was set up) creates an admin user', async () => {
  assert.equal((await ok({ controller: 'server', action: 'adminExists' }, { token: null })).exists, false);
  const created = await ok({
    controller: 'security',
    action: 'createUser',
    _id: 'e2e-admin',
    body: {
      content: { profileIds: ['admin'] },
      credentials: { local: { username: 'e2e-admin', password: 'e2e-Secret-1' } },
    },
  }, { token: null });
  assert.deepEqual(created._source.profileIds, ['admin']);
  assert.equal((await ok({ controller: 'server', action: 'adminExists' }, { token: null })).exists, true);
});

test('auth:login with the local strategy', async () => {
  const wrong = await api({ controller: 'auth', action: 'login', strategy: 'local', body: { username: 'e2e-admin', password: 'nope' } }, { token: null });
  assert.equal(wrong.status, 401);
  const result = await ok({ controller: 'auth', action: 'login', strategy: 'local', body: { username: 'e2e-admin', password: 'e2e-Secret-1' } }, { token: null });
  assert.equal(result._id, 'e2e-admin');
  jwt = result.jwt;
  assert.equal((await ok({ controller: 'auth', action: 'getCurrentUser' }))._id, 'e2e-admin');
});

test('index, collection and document round trip', async () => {
  const target = { index: 'e2e', collection: 'sensors' };
  await ok({ controller: 'index', action: 'create', index: 'e2e' });
  await ok({ controller: 'collection', action: 'create', ...target, body: { mappings: { properties: { name: { type: 'keyword' }, temp: { type: 'float' } } } } });
  assert.deepEqual((await ok({ controller: 'collection', action: 'list', index: 'e2e' })).collections, [{ name: 'sensors', type: 'stored' }]);

  const content = { name: 'kitchen', temp: 21.5, tags: ['a', 'b'], place: { floor: 1, room: 'kitchen' }, unicode: 'é✓', none: null };
  const created = await ok({ controller: 'document', action: 'create', ...target, _id: 'k1', body: content });
  assert.equal(created._id, 'k1');
  assert.deepEqual(withoutMeta(created._source), content);
  const conflict = await api({ controller: 'document', action: 'create', ...target, _id: 'k1', body: content });
  assert.equal(conflict.error.id, 'services.storage.document_already_exists');
  await ok({ controller: 'document', action: 'create', ...target, _id: 'b1', body: { name: 'bedroom', temp: 18 } });
  await ok({ controller: 'document', action: 'create', ...target, body: { name: 'attic', temp: 30 } });

  const got = await ok({ controller: 'document', action: 'get', ...target, _id: 'k1' });
  assert.deepEqual(withoutMeta(got._source), content);
  assert.equal(got._version, 1);
  assert.equal(got._source._kuzzle_info.author, 'e2e-admin');

  const updated = await ok({ controller: 'document', action: 'update', ...target, _id: 'k1', body: { temp: 22, place: { room: 'kitchen-2' } } });
  assert.equal(updated._version, 2);
  const merged = { ...content, temp: 22, place: { floor: 1, room: 'kitchen-2' } };
  assert.deepEqual(withoutMeta((await ok({ controller: 'document', action: 'get', ...target, _id: 'k1' }))._source), merged);

  const search = await ok({
    controller: 'document',
    action: 'search',
    ...target,
    body: { query: { bool: { filter: [{ range: { temp: { gte: 20 } } }], must_not: [{ term: { name: 'attic' } }] } } },
  });
  assert.equal(search.total, 1);
  assert.deepEqual(withoutMeta(search.hits[0]._source), merged);

  const sorted = await ok({ controller: 'document', action: 'search', ...target, from: 1, size: 5, body: { sort: [{ temp: 'desc' }] } });
  assert.equal(sorted.total, 3);
  assert.deepEqual(sorted.hits.map((h) => h._source.name), ['kitchen', 'bedroom']);

  const koncorde = await ok({ controller: 'document', action: 'search', ...target, lang: 'koncorde', body: { query: { equals: { name: 'bedroom' } } } });
  assert.deepEqual(koncorde.hits.map((h) => h._id), ['b1']);

  assert.equal((await ok({ controller: 'document', action: 'count', ...target, body: { query: { terms: { name: ['kitchen', 'bedroom'] } } } })).count, 2);
  assert.equal((await ok({ controller: 'document', action: 'count', ...target })).count, 3);

  await ok({ controller: 'document', action: 'delete', ...target, _id: 'k1' });
  const missing = await api({ controller: 'document', action: 'get', ...target, _id: 'k1' });
  assert.equal(missing.status, 404);
  assert.equal(missing.error.id, 'services.storage.not_found');
  assert.equal((await ok({ controller: 'document', action: 'count', ...target })).count, 2);
});

test('realtime subscribe, notification, count and list (single-node handlers)', async () => {
  const target = { index: 'e2e', collection: 'sensors' };
  const ws = new WebSocket(`ws://127.0.0.1:${host.httpPort}`);
  await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject));
  try {
    const messages = [];
    ws.on('message', (data) => messages.push(JSON.parse(data)));
    const wsCall = async (request) => {
      const requestId = `r${messages.length}-${Math.random()}`;
      ws.send(JSON.stringify({ ...request, requestId, jwt }));
      for (let i = 0; i < 100; i++) {
        const answer = messages.find((m) => m.requestId === requestId && !m.type);
        if (answer) return answer;
        await new Promise((r) => setTimeout(r, 20));
      }
      throw new Error(`no answer to ${request.controller}:${request.action}`);
    };

    const { result: { roomId } } = await wsCall({ controller: 'realtime', action: 'subscribe', ...target, body: { range: { temp: { gt: 25 } } } });
    assert.equal((await ok({ controller: 'realtime', action: 'count', body: { roomId } })).count, 1);
    assert.deepEqual(await ok({ controller: 'realtime', action: 'list' }), { e2e: { sensors: { [roomId]: 1 } } });

    await ok({ controller: 'document', action: 'create', ...target, _id: 'hot', body: { name: 'oven', temp: 200 } });
    await ok({ controller: 'document', action: 'create', ...target, _id: 'cold', body: { name: 'fridge', temp: 4 } });
    for (let i = 0; i < 50 && !messages.some((m) => m.type === 'document'); i++) await new Promise((r) => setTimeout(r, 20));
    const notifications = messages.filter((m) => m.type === 'document');
    assert.deepEqual(notifications.map((n) => n.result._id), ['hot']);

    await wsCall({ controller: 'realtime', action: 'unsubscribe', body: { roomId } });
    assert.equal((await ok({ controller: 'realtime', action: 'count', body: { roomId } })).count, 0);
    assert.deepEqual(await ok({ controller: 'realtime', action: 'list' }), {});
  } finally {
    ws.close();
  }
});

test('embedded SDK over IPC (host.kuzzle.query)', async () => {
  const { result } = await host.kuzzle.query({ controller: 'document', action: 'get', index: 'e2e', collection: 'sensors', _id: 'b1' });
  assert.equal(result._source.name, 'bedroom');
  await assert.rejects(host.kuzzle.query({ controller: 'document', action: 'get', index: 'e2e', collection: 'sensors', _id: 'zz' }), { id: 'services.storage.not_found' });
});

test('stop() releases Kuzzle and Redis', async () => {
  const { redis, kuzzle, httpPort } = host;
  await host.stop();
  const alive = (pid) => {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  };
  assert.equal(alive(kuzzle.pid), false);
  if (!redis.external) {
    assert.equal(alive(redis.pid), false);
    const processes = execFileSync('ps', ['-eo', 'args'], { encoding: 'utf8' }).split('\n');
    assert.deepEqual(processes.filter((p) => p.includes('redis-server') && p.includes(`:${redis.port}`)), []);
  }
  await assert.rejects(fetch(`http://127.0.0.1:${httpPort}/_now`));
});
