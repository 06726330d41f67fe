'use strict';
// How a CoAP request becomes a Kuzzle request: controller and action from the path (plugin
// controllers included), Uri-Query arguments as kuzzle-common-objects exposes them.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { bootDouble, coap, stderrJson } = require('./coap-helpers');

let double;
let port;
before(async () => ({ double, port } = await bootDouble()));
after(() => double?.stop());

const post = (target, flags = []) => coap(port, target, ['-m', 'post', '-A', '50', ...flags]);
const body = (run) => JSON.parse(run.payload.toString('utf8'));

test('a plugin controller with a slash: /api/my-plugin/sensors/read reaches my-plugin/sensors:read', async () => {
  const before = double.calls.get('my-plugin/sensors:read') ?? 0;
  const run = await post('/api/my-plugin/sensors/read');
  assert.equal(run.last.code, '2.05');
  const response = body(run);
  assert.equal(response.controller, 'my-plugin/sensors');
  assert.equal(response.action, 'read');
  assert.deepEqual(response.result, { sensor: 'ok' });
  assert.equal(double.calls.get('my-plugin/sensors:read'), before + 1);
});

test('Uri-Query arguments: resource, args (a bare flag is true), jwt; envelope is not passed on', async () => {
  const run = await post('/api/test/echo?index=i&collection=c&_id=x&refresh=wait_for&flag&jwt=token-1&envelope=full');
  assert.equal(run.last.code, '2.05');
  const response = body(run);
  assert.equal(response.index, 'i');
  assert.equal(response.collection, 'c');
  assert.deepEqual(response.result.args, { refresh: 'wait_for', flag: true });
  assert.equal(response.result.jwt, 'token-1');
});

test('_id reaches request.input.resource._id (document:get names it)', async () => {
  const run = await post('/api/document/get?index=i&collection=c&_id=some-id');
  assert.equal(run.last.code, '4.04');
  assert.match(stderrJson(run.stderr).error.message, /Document "some-id" not found/);
});

test('controller and action in the query cannot override the path', async () => {
  const run = await post('/api/test/echo?controller=server&action=now');
  assert.equal(run.last.code, '2.05');
  const response = body(run);
  assert.equal(`${response.controller}:${response.action}`, 'test:echo');
  assert.deepEqual(response.result.args, {});
});

test('a JSON body reaches request.input.body', async () => {
  const run = await post('/api/test/echo?envelope=compact', ['-t', '50', '-e', '{"temperature":21.5,"tags":["a","b"]}']);
  assert.equal(run.last.code, '2.05');
  assert.deepEqual(body(run).body, { temperature: 21.5, tags: ['a', 'b'] });
});
