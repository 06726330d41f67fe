'use strict';
// host '::1': an IPv6-only listener answers coap-client at coap://[::1]:PORT.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { bootDouble, coap, connectionIds } = require('./coap-helpers');
const { decodeWithCbor2 } = require('../support/peers');

let double;
let port;
before(async () => ({ double, port } = await bootDouble({ coap: { host: '::1' } })));
after(() => double?.stop());

test('listens on [::1]', () => {
  assert.equal(double.protocol.listening.address, '::1');
});

test('coap-client at coap://[::1]:PORT gets server:now; the connection ip is ::1', async () => {
  const before = connectionIds(double);
  const run = await coap(port, '/api/server/now', ['-m', 'post'], { host: '::1' });
  assert.equal(run.last?.code, '2.05', run.stderr);
  assert.equal(decodeWithCbor2(run.payload).types.result.now, 'int');
  const added = [...double.connections.values()].filter((c) => !before.has(c.id));
  assert.equal(added.length, 1);
  assert.deepEqual(added[0].ips, ['::1']);
});
