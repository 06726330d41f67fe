'use strict';
// node-coap (an independent CoAP client) against the plugin: CBOR and JSON bodies, Block2.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const coap = require('coap');
const { bootDouble, bigResult } = require('./coap-helpers');
const { decodeWithCbor2 } = require('../support/peers');
const { nodeCoapRequest } = require('../support/nodeCoap');

let double;
let port;
let agent;
before(async () => {
  ({ double, port } = await bootDouble());
  agent = new coap.Agent({ type: 'udp4' });
});
after(async () => {
  agent?.close();
  await double?.stop();
});

/** One node-coap request (repeated with the Echo value of a 4.01, see nodeCoapRequest); rejects after 5 s. */
const request = ({ pathname, query, options = {}, body }) =>
  nodeCoapRequest({ hostname: '127.0.0.1', port, method: 'POST', pathname, query, agent }, { options, body });

test('POST /api/server/now: 2.05 and a CBOR full envelope', async () => {
  const res = await request({ pathname: '/api/server/now' });
  assert.equal(res.code, '2.05');
  assert.equal(res.headers['Content-Format'], 'application/cbor');
  const { value, types } = decodeWithCbor2(res.payload);
  assert.equal(value.status, 200);
  assert.equal(value.controller, 'server');
  assert.equal(value.action, 'now');
  assert.equal(types.result.now, 'int');
});

test('a JSON body with Content-Format application/json, answered in JSON (Accept)', async () => {
  const sent = { temperature: 21.5, unit: 'C', tags: ['kitchen'] };
  const res = await request({
    pathname: '/api/test/echo',
    query: 'envelope=compact',
    options: { 'Content-Format': 'application/json', Accept: 'application/json' },
    body: JSON.stringify(sent),
  });
  assert.equal(res.code, '2.05');
  assert.equal(res.headers['Content-Format'], 'application/json');
  assert.deepEqual(JSON.parse(res.payload.toString('utf8')).body, sent);
});

test('a JSON body answered in CBOR by default', async () => {
  const res = await request({
    pathname: '/api/test/echo',
    query: 'envelope=compact',
    options: { 'Content-Format': 'application/json' },
    body: JSON.stringify({ n: 1 }),
  });
  assert.equal(res.headers['Content-Format'], 'application/cbor');
  assert.deepEqual(decodeWithCbor2(res.payload).value.body, { n: 1 });
});

test('node-coap reassembles the Block2 answer of server:info; the action ran once', async () => {
  const before = double.calls.get('server:info') ?? 0;
  const res = await request({ pathname: '/api/server/info', query: 'envelope=compact' });
  assert.equal(res.code, '2.05');
  assert.deepEqual(decodeWithCbor2(res.payload).value, bigResult());
  assert.equal(double.calls.get('server:info'), before + 1);
});
