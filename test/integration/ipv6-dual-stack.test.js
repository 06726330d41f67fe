'use strict';
// host '::': one dual-stack socket answers IPv6 and IPv4 clients; Kuzzle sees plain IPv4 addresses.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { bootDouble, coap, connectionIds } = require('./coap-helpers');
const { decodeWithCbor2 } = require('../support/peers');

let double;
let port;
before(async () => ({ double, port } = await bootDouble({ coap: { host: '::' } })));
after(() => double?.stop());

async function newConnectionOf(host) {
  const before = connectionIds(double);
  const run = await coap(port, '/api/server/now', ['-m', 'post'], { host });
  assert.equal(run.last?.code, '2.05', `${host}: ${run.stderr}`);
  assert.equal(decodeWithCbor2(run.payload).value.status, 200);
  const added = [...double.connections.values()].filter((c) => !before.has(c.id));
  assert.equal(added.length, 1);
  return added[0];
}

test('an IPv4 client (127.0.0.1) is answered; its connection ip is 127.0.0.1, without ::ffff:', async () => {
  const connection = await newConnectionOf('127.0.0.1');
  assert.deepEqual(connection.ips, ['127.0.0.1']);
  assert.equal(connection.protocol, 'coap');
});

test('an IPv6 client ([::1]) is answered too; its connection ip is ::1', async () => {
  assert.deepEqual((await newConnectionOf('::1')).ips, ['::1']);
});
