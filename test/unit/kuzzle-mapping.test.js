'use strict';
const { test } = require('node:test');
const assert = require('node:assert/strict');
const { Exchange } = require('../../dist/coap/exchange');
const { encodeCbor, decodeCbor } = require('../../dist/codec/cbor');
const { mapApiRequest, envelopeOf, queryArgument, MappingError } = require('../../dist/kuzzle/requestMapping');
const { coapCodeOf, fromKuzzle, pluginError, responseFormat, statusOf } = require('../../dist/kuzzle/responses');

const remote = { address: '127.0.0.1', port: 40000, family: 'IPv4', key: '127.0.0.1|40000' };

function exchange({ method = 2, path = [], query = [], payload = Buffer.alloc(0), contentFormat, accept } = {}) {
  const message = { type: 0, code: method, messageId: 1, token: Buffer.alloc(0), options: [], payload };
  const ex = new Exchange({ respond() {} }, message, remote, 0, 'k');
  ex.path.push(...path);
  ex.query.push(...query);
  ex.contentFormat = contentFormat;
  ex.accept = accept;
  return ex;
}

const code = (text) => {
  const [c, d] = text.split('.').map(Number);
  return (c << 5) | d;
};

test('POST /api/<controller>/<action> with query arguments and a CBOR body', () => {
  const body = { temperature: 21.5, at: 1700000000000 };
  const { data, envelope } = mapApiRequest(
    exchange({
      path: ['api', 'document', 'create'],
      query: ['index=iot', 'collection=sensors', '_id=s1', 'refresh=wait_for', 'jwt=abc', 'flag', 'controller=evil', 'envelope=compact'],
      payload: encodeCbor(body),
    }),
    'full',
  );
  assert.equal(envelope, 'full');
  assert.deepEqual(data, {
    index: 'iot', collection: 'sensors', _id: 's1', refresh: 'wait_for', jwt: 'abc', flag: true,
    controller: 'document', action: 'create', body,
  });
});

test('query values: booleans and JSON arrays/objects become values, resource names stay strings', () => {
  const { data } = mapApiRequest(
    exchange({ path: ['api', 'a', 'b'], query: ['on=true', 'off=false', 'ids=["a","b"]', 'volatile={"v":1}', 'broken=[1', '_id=true', 'size=10'] }),
    'full',
  );
  assert.deepEqual(data, {
    on: true, off: false, ids: ['a', 'b'], volatile: { v: 1 }, broken: '[1', _id: 'true', size: '10', controller: 'a', action: 'b',
  });
});

test('a plugin controller keeps every segment between api and the action', () => {
  const { data } = mapApiRequest(exchange({ path: ['api', 'my-plugin', 'sensors', 'read'] }), 'full');
  assert.equal(data.controller, 'my-plugin/sensors');
  assert.equal(data.action, 'read');
  assert.equal('body' in data, false);
});

test('JSON bodies by Content-Format 50; other formats, bad bodies, paths and methods are refused', () => {
  const json = mapApiRequest(exchange({ path: ['api', 'a', 'b'], payload: Buffer.from('{"x":1}'), contentFormat: 50 }), 'full');
  assert.deepEqual(json.data.body, { x: 1 });
  const refusals = [
    [{ path: ['api', 'a', 'b'], payload: Buffer.from('hi'), contentFormat: 0 }, '4.15', 'network.coap.unsupported_content_format'],
    [{ path: ['api', 'a', 'b'], payload: Buffer.from('{"x":'), contentFormat: 50 }, '4.00', 'network.coap.invalid_payload'],
    [{ path: ['api', 'a', 'b'], payload: Buffer.from([0xa1, 0x61]) }, '4.00', 'network.coap.invalid_payload'],
    [{ path: ['api', 'server'] }, '4.04', 'network.coap.url_not_found'],
    [{ path: ['api', '', 'now'] }, '4.04', 'network.coap.url_not_found'],
    [{ path: ['api', 'server', 'now'], method: 1 }, '4.05', 'network.coap.method_not_allowed'],
    [{ path: ['api', 'server', 'now'], method: 3 }, '4.05', 'network.coap.method_not_allowed'],
  ];
  for (const [given, expected, id] of refusals) {
    assert.throws(
      () => mapApiRequest(exchange(given), 'full'),
      (error) => error instanceof MappingError && error.code === code(expected) && error.id === id,
      JSON.stringify(given),
    );
  }
});

test('queryArgument reads one name=value argument', () => {
  assert.equal(queryArgument(['index=i', 'jwt=a=b'], 'jwt'), 'a=b');
  assert.equal(queryArgument(['jwtx=1'], 'jwt'), undefined);
  assert.equal(queryArgument([], 'jwt'), undefined);
});

test('envelope: the query chooses, else the configured default', () => {
  assert.equal(envelopeOf(['envelope=compact'], 'full'), 'compact');
  assert.equal(envelopeOf(['envelope=full'], 'compact'), 'full');
  assert.equal(envelopeOf(['index=x'], 'compact'), 'compact');
});

test('Kuzzle statuses map to CoAP codes', () => {
  const table = {
    200: '2.05', 206: '2.05', 400: '4.00', 401: '4.01', 403: '4.03', 404: '4.04', 405: '4.05', 406: '4.06',
    409: '4.09', 412: '4.12', 413: '4.13', 415: '4.15', 429: '4.29', 500: '5.00', 501: '5.01', 502: '5.02',
    503: '5.03', 504: '5.04', 418: '4.00', 507: '5.00',
  };
  for (const [status, expected] of Object.entries(table)) assert.equal(coapCodeOf(Number(status)), code(expected), status);
  assert.equal(statusOf(code('4.13')), 413);
  assert.equal(statusOf(code('4.02')), 400);
  assert.equal(statusOf(code('4.08')), 400);
});

test('Accept: CBOR by default, JSON on request, anything else refused', () => {
  assert.equal(responseFormat(undefined), 60);
  assert.equal(responseFormat(60), 60);
  assert.equal(responseFormat(50), 50);
  assert.equal(responseFormat(0), null);
  assert.equal(responseFormat(40), null);
});

const success = {
  raw: false, status: 200, requestId: 'r1',
  content: { requestId: 'r1', status: 200, error: null, controller: 'server', action: 'now', result: { now: 1700000000000 } },
};
const failure = {
  raw: false, status: 404, requestId: 'r2',
  content: { requestId: 'r2', status: 404, error: { id: 'services.storage.not_found', code: 123, message: 'nope', status: 404, props: [] }, result: null },
};

test('full envelope carries Kuzzle content as is; compact carries the result or {status, id, message}', () => {
  const full = fromKuzzle(success, 'full', 60);
  assert.equal(full.code, code('2.05'));
  assert.equal(full.contentFormat, 60);
  assert.deepEqual(decodeCbor(full.payload), success.content);
  assert.deepEqual(decodeCbor(fromKuzzle(success, 'compact', 60).payload), { now: 1700000000000 });
  const error = fromKuzzle(failure, 'compact', 50);
  assert.equal(error.code, code('4.04'));
  assert.deepEqual(JSON.parse(error.payload), { status: 404, id: 'services.storage.not_found', message: 'nope' });
  assert.deepEqual(decodeCbor(fromKuzzle(failure, 'full', 60).payload).error.id, 'services.storage.not_found');
});

test('206 keeps the partial errors in both envelopes', () => {
  const partial = {
    raw: false, status: 206,
    content: { status: 206, error: { id: 'api.process.incomplete_multiple_request', status: 206, message: '1 failed' }, result: { successes: [1], errors: [2] } },
  };
  const compact = fromKuzzle(partial, 'compact', 60);
  assert.equal(compact.code, code('2.05'));
  assert.deepEqual(decodeCbor(compact.payload), {
    result: { successes: [1], errors: [2] },
    error: { status: 206, id: 'api.process.incomplete_multiple_request', message: '1 failed' },
  });
  assert.equal(decodeCbor(fromKuzzle(partial, 'full', 60).payload).error.message, '1 failed');
});

test('raw responses are sent as their content', () => {
  const raw = { raw: true, status: 200, content: 'plain text' };
  assert.equal(decodeCbor(fromKuzzle(raw, 'compact', 60).payload), 'plain text');
});

test("plugin errors have Kuzzle's error shape", () => {
  const compact = pluginError(code('4.13'), 'network.coap.request_too_large', 'too big', 'compact', 60);
  assert.equal(compact.code, code('4.13'));
  assert.deepEqual(decodeCbor(compact.payload), { status: 413, id: 'network.coap.request_too_large', message: 'too big' });
  const full = pluginError(code('4.02'), 'network.coap.bad_option', 'opt', 'full', 50);
  assert.deepEqual(JSON.parse(full.payload), {
    status: 400, error: { status: 400, id: 'network.coap.bad_option', message: 'opt' }, result: null,
  });
});
