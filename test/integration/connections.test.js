'use strict';
// Kuzzle connections (idleTimeoutMs: 1000): one per endpoint (address and port), removed when
// idle, or on disconnect(connectionId).
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { bootDouble, rawClient, connectionIds } = require('./coap-helpers');
const { waitUntil } = require('../support/util');

let double;
let port;
before(async () => ({ double, port } = await bootDouble({ coap: { idleTimeoutMs: 1000 } })));
after(() => double?.stop());

async function now(raw) {
  const response = await raw.request({ path: '/api/server/now' });
  assert.equal(response.code, '2.05');
}

/** Runs `fn` and returns the connections it created. */
async function created(fn) {
  const before = connectionIds(double);
  await fn();
  return [...double.connections.values()].filter((c) => !before.has(c.id));
}

test('two client sockets: two connections; the same socket twice: still one', async () => {
  const a = await rawClient(port);
  const b = await rawClient(port);
  try {
    const first = await created(async () => {
      await now(a);
      await now(b);
    });
    assert.equal(first.length, 2);
    for (const connection of first) assert.deepEqual(connection.ips, ['127.0.0.1']);
    const again = await created(async () => {
      await now(a);
      await now(a);
    });
    assert.equal(again.length, 0);
  } finally {
    await a.close();
    await b.close();
  }
});

test('a refused request (4.04) creates no connection', async () => {
  const raw = await rawClient(port);
  try {
    const added = await created(async () => assert.equal((await raw.request({ path: '/nothing' })).code, '4.04'));
    assert.equal(added.length, 0);
  } finally {
    await raw.close();
  }
});

test('an idle connection is removed after idleTimeoutMs (removeConnection)', async () => {
  const raw = await rawClient(port);
  try {
    const [connection] = await created(() => now(raw));
    assert.ok(connection);
    const since = Date.now();
    assert.ok(await waitUntil(() => double.removed.includes(connection.id), 8000), 'removed within 8 s');
    const after = Date.now() - since;
    assert.ok(after >= 900, `removed after ${after} ms, not before the idle timeout`);
    assert.equal(double.connections.has(connection.id), false);
    // The device comes back: a new connection.
    const [next] = await created(() => now(raw));
    assert.ok(next && next.id !== connection.id);
  } finally {
    await raw.close();
  }
});

test('traffic keeps a connection alive', async () => {
  const raw = await rawClient(port);
  try {
    const [connection] = await created(() => now(raw));
    for (let i = 0; i < 6; i++) {
      await new Promise((resolve) => setTimeout(resolve, 300));
      await now(raw);
    }
    assert.equal(double.removed.includes(connection.id), false, 'still there after 1.8 s of regular requests');
  } finally {
    await raw.close();
  }
});

test('disconnect(connectionId) removes the connection at once; the next request opens a new one', async () => {
  const raw = await rawClient(port);
  try {
    const [connection] = await created(() => now(raw));
    double.protocol.disconnect(connection.id);
    assert.ok(double.removed.includes(connection.id));
    assert.equal(double.connections.has(connection.id), false);
    double.protocol.disconnect(connection.id); // twice: no second removal
    assert.equal(double.removed.filter((id) => id === connection.id).length, 1);
    const [next] = await created(() => now(raw));
    assert.ok(next && next.id !== connection.id);
  } finally {
    await raw.close();
  }
});
