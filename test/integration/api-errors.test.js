'use strict';
// CoAP requests the API refuses, seen by coap-client: method, path, formats, bodies, Kuzzle errors.
// Error bodies are read as JSON (-A 50) from coap-client's stderr, where it prints them.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { bootDouble, coap, logOption, stderrJson } = require('./coap-helpers');
const { tmpFile } = require('../support/util');

let double;
let port;
before(async () => ({ double, port } = await bootDouble()));
after(() => double?.stop());

const executions = () => [...double.calls.values()].reduce((a, b) => a + b, 0);

/** Runs coap-client and checks the code, the error id in the body, and that Kuzzle ran nothing. */
async function refused(target, flags, code, id, { runs = 0 } = {}) {
  const before = executions();
  const run = await coap(port, target, flags);
  assert.equal(run.last?.code, code, `${flags.join(' ')} ${target}: ${run.stderr}`);
  assert.equal(executions(), before + runs);
  const accept = flags.includes('-A') ? flags[flags.indexOf('-A') + 1] : undefined;
  assert.equal(logOption(run.last, 'Content-Format'), accept === '50' ? 'application/json' : 'application/cbor');
  if (accept === '50') {
    const body = stderrJson(run.stderr);
    assert.equal(body.error.id, id);
    assert.equal(body.status, body.error.status);
    return body;
  }
  assert.ok(run.stderr.includes(id), `${id} in ${JSON.stringify(run.stderr)}`);
  return null;
}

test('GET /api/server/now is 4.05', async () => {
  const body = await refused('/api/server/now', ['-m', 'get', '-A', '50'], '4.05', 'network.coap.method_not_allowed');
  assert.equal(body.status, 405);
});

test('PUT and DELETE on /api/... are 4.05 too', async () => {
  for (const method of ['put', 'delete']) await refused('/api/server/now', ['-m', method, '-A', '50'], '4.05', 'network.coap.method_not_allowed');
});

test('POST /nothing and POST /api/server are 4.04', async () => {
  await refused('/nothing', ['-m', 'post', '-A', '50'], '4.04', 'network.coap.url_not_found');
  await refused('/api/server', ['-m', 'post', '-A', '50'], '4.04', 'network.coap.url_not_found');
});

test('a text/plain body (-t 0) is 4.15', async () => {
  const body = await refused('/api/test/echo', ['-m', 'post', '-t', '0', '-e', 'hello', '-A', '50'], '4.15', 'network.coap.unsupported_content_format');
  assert.equal(body.status, 415);
});

test('Accept: text/plain (-A 0) is 4.06, its error body in CBOR', async () => {
  await refused('/api/server/now', ['-m', 'post', '-A', '0'], '4.06', 'network.coap.not_acceptable');
});

test('a malformed CBOR body is 4.00 network.coap.invalid_payload', async () => {
  // A map announcing one pair, then a text string of 5 bytes with only 1 present.
  const file = tmpFile(Buffer.from([0xa1, 0x65, 0x61]));
  const body = await refused('/api/test/echo', ['-m', 'post', '-t', '60', '-f', file, '-A', '50'], '4.00', 'network.coap.invalid_payload');
  assert.equal(body.status, 400);
});

test('a CBOR body followed by extra bytes is 4.00 network.coap.invalid_payload', async () => {
  const file = tmpFile(Buffer.from([0xa0, 0x01]));
  await refused('/api/test/echo', ['-m', 'post', '-t', '60', '-f', file, '-A', '50'], '4.00', 'network.coap.invalid_payload');
});

test('a malformed JSON body is 4.00 network.coap.invalid_payload (CBOR and JSON answers)', async () => {
  const file = tmpFile('{"a": ');
  await refused('/api/test/echo', ['-m', 'post', '-t', '50', '-f', file, '-A', '50'], '4.00', 'network.coap.invalid_payload');
  await refused('/api/test/echo', ['-m', 'post', '-t', '50', '-f', file], '4.00', 'network.coap.invalid_payload');
});

test('a Kuzzle BadRequestError (test:throw) is 4.00 with its id', async () => {
  const body = await refused('/api/test/throw', ['-m', 'post', '-A', '50'], '4.00', 'api.assert.invalid_argument', { runs: 1 });
  assert.equal(body.error.message, 'bad thing');
});

test('an unknown action is 4.04 api.process.action_not_found', async () => {
  await refused('/api/nope/nothing', ['-m', 'post', '-A', '50'], '4.04', 'api.process.action_not_found', { runs: 1 });
});
