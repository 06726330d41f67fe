'use strict';
// Datagrams that are not well-formed CoAP requests (RFC 7252 §3, §4.2, §4.3, §5.4.1): a CON whose
// header can be read is rejected with an RST, an unknown version is ignored, nothing runs, and the
// server keeps answering.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { bootWithRawClient, json } = require('./coap-helpers');
const { CF, decodeBody, option, uint } = require('../support/raw');

let double;
let raw;
let stop;
before(async () => ({ double, raw, stop } = await bootWithRawClient()));
after(() => stop?.());

const executions = () => [...double.calls.values()].reduce((a, b) => a + b, 0);
const answersTo = (mid) => raw.collect((m) => m.messageId === mid, 300);

/** Sends `bytes` (a CON with message ID `mid` when its header says so) and returns what came back for that ID. */
async function sendMalformed(bytes) {
  const before = executions();
  await raw.sendRaw(Buffer.from(bytes));
  const mid = bytes.length >= 4 ? (bytes[2] << 8) | bytes[3] : -1;
  const answers = await answersTo(mid);
  assert.equal(executions(), before, 'nothing reached Kuzzle');
  return answers;
}

function assertReset(answers, mid) {
  const seen = answers.map((a) => `${a.type} ${a.code} (${a.raw.length} bytes)`);
  assert.deepEqual(seen, ['RST 0.00 (4 bytes)'], `expected one empty RST, got: ${seen.join(', ') || 'nothing'}`);
  assert.equal(answers[0].messageId, mid);
}

// CON POST, message ID 0x1000 + n.
const con = (n, ...rest) => [0x40 | (rest.shift() ?? 0), 0x02, 0x10, n, ...rest];

test('an empty CON (CoAP ping) is answered with an RST of the same message ID', async () => {
  assertReset(await sendMalformed([0x40, 0x00, 0x10, 0x01]), 0x1001);
});

test('garbage and datagrams shorter than a header get no answer', async () => {
  raw.clear();
  for (const bytes of [[0xde, 0xad, 0xbe, 0xef, 0xca, 0xfe, 0x01, 0x02], [0x40, 0x02], [0x00], Array(40).fill(0xff)]) {
    await raw.sendRaw(Buffer.from(bytes));
  }
  const answers = await raw.collect(() => true, 300);
  assert.equal(answers.length, 0);
});

test('version 2 is silently ignored', async () => {
  assert.deepEqual(await sendMalformed([0x80, 0x02, 0x10, 0x02, 0xb3, 0x61, 0x70, 0x69]), []);
});

test('token length 15 (reserved) is a format error: RST', async () => {
  assertReset(await sendMalformed(con(3, 0x0f, 0xaa)), 0x1003);
});

test('option delta 15 that is not the payload marker is a format error: RST', async () => {
  assertReset(await sendMalformed(con(4, 0, 0xf1, 0x00)), 0x1004);
});

test('header only, with a token length bigger than the datagram: RST', async () => {
  // TKL 8, but only 2 token bytes follow.
  assertReset(await sendMalformed(con(5, 8, 0xaa, 0xbb)), 0x1005);
});

test('an option cut in the middle (Uri-Path of 10 bytes, 3 present): RST', async () => {
  assertReset(await sendMalformed(con(6, 1, 0xcc, 0xba, 0x61, 0x70, 0x69)), 0x1006);
});

test('a payload marker followed by no payload is a format error: RST', async () => {
  assertReset(await sendMalformed(con(7, 0, 0xb3, 0x61, 0x70, 0x69, 0xff)), 0x1007);
});

test('a response code in a CON request is rejected with an RST', async () => {
  assertReset(await sendMalformed([0x40, 0x45, 0x10, 0x08]), 0x1008);
});

test('an unknown critical option (65001) is 4.02 with a Kuzzle-shaped error body', async () => {
  const before = executions();
  const response = await raw.request({ path: '/api/server/now', accept: 50, options: [{ name: '65001', value: Buffer.from('x') }] });
  assert.equal(response.code, '4.02');
  assert.equal(response.type, 'ACK');
  const body = json(response);
  assert.equal(body.status, 400);
  assert.equal(body.result, null);
  assert.equal(body.error.status, 400);
  assert.equal(body.error.id, 'network.coap.bad_option');
  assert.match(body.error.message, /65001/);
  assert.equal(executions(), before);
});

test('an unknown elective option (65000) is ignored', async () => {
  const response = await raw.request({ path: '/api/server/now', accept: 50, options: [{ name: '65000', value: Buffer.from('x') }] });
  assert.equal(response.code, '2.05');
  assert.ok(Number.isInteger(json(response).result.now));
});

test('a repeated Accept (critical, not repeatable) is unrecognised: 4.02, nothing runs (RFC 7252 §5.4.5)', async () => {
  const before = executions();
  const response = await raw.request({ path: '/api/server/now', accept: 50, options: [{ name: 'Accept', value: uint(60) }] });
  assert.equal(response.code, '4.02');
  assert.match(json(response).error.message, /critical option 17 repeated/);
  assert.equal(executions(), before);
});

test('an Accept of 3 bytes (invalid length) is unrecognised: 4.02; a repeated Content-Format (elective) is ignored', async () => {
  const tooLong = await raw.request({ path: '/api/server/now', options: [{ name: 'Accept', value: Buffer.from([0, 0, 50]) }] });
  assert.equal(tooLong.code, '4.02');
  assert.match(decodeBody(tooLong.payload, CF.CBOR).error.message, /critical option 17 of invalid length 3/); // Accept ignored: CBOR
  const repeated = await raw.request({ path: '/api/server/now', accept: 50,
    options: [{ name: 'Content-Format', value: uint(50) }, { name: 'Content-Format', value: uint(60) }] });
  assert.equal(repeated.code, '2.05');
});

test('a NON with an unknown critical option is rejected with an RST and never answered (RFC 7252 §5.4.1)', async () => {
  const before = { executions: executions(), rejected: double.protocol.stats().transport.rejected };
  const { messageId } = await raw.send({ path: '/api/server/now', confirmable: false, accept: 50, options: [{ name: '65001', value: Buffer.from('x') }] });
  const answers = await answersTo(messageId);
  assert.deepEqual(answers.map((a) => `${a.type} ${a.code}`), ['RST 0.00']);
  assert.equal(double.protocol.stats().transport.rejected, before.rejected + 1);
  assert.equal(executions(), before.executions);
});

test('after all of it the server still answers server:now, and logged no handler error', async () => {
  const response = await raw.request({ path: '/api/server/now', query: ['envelope=compact'], accept: 50 });
  assert.equal(response.code, '2.05');
  assert.equal(option(response, 'Content-Format')[0], 50);
  assert.ok(Number.isInteger(json(response).now));
  assert.deepEqual(double.logs.filter((l) => l.level === 'error'), []);
});
