'use strict';
// Block1 (RFC 7959): 20 KB bodies uploaded by coap-client in 1024-byte blocks reach Kuzzle whole.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const cborX = require('cbor-x');
const { bootDouble, coap, logOption } = require('./coap-helpers');
const { encodeWithCbor2, decodeWithCbor2 } = require('../support/peers');
const { tmpFile } = require('../support/util');

let double;
let port;
before(async () => ({ double, port } = await bootDouble()));
after(() => double?.stop());

/** Varied data of at least 20 KB once encoded, so that a misplaced block would show. */
function document(sizeOf) {
  const value = { device: 'dev-1', readings: [] };
  for (let i = 0; sizeOf(value) < 22 * 1024; i++) {
    for (let j = 0; j < 50; j++) value.readings.push({ sensor: `s-${i}-${j}`, value: i * 50 + j, ok: j % 3 === 0 });
  }
  return value;
}

const echoes = () => double.calls.get('test:echo') ?? 0;

const jsonBytes = (v) => Buffer.from(JSON.stringify(v));
for (const { name, flag, sizeOf, encode, decode } of [
  { name: 'JSON', flag: '50', sizeOf: (v) => jsonBytes(v).length, encode: jsonBytes, decode: (b) => JSON.parse(b.toString('utf8')) },
  // Sized with cbor-x (cheap), encoded by python3-cbor2 (independent of the plugin).
  { name: 'CBOR', flag: '60', sizeOf: (v) => cborX.encode(v).length, encode: encodeWithCbor2, decode: (b) => decodeWithCbor2(b).value },
]) {
  test(`a 20 KB ${name} body in 1024-byte Block1 blocks is echoed whole`, async () => {
    const value = document(sizeOf);
    const body = encode(value);
    assert.ok(body.length >= 20 * 1024 && body.length < 26 * 1024, `${body.length} bytes`);
    const before = echoes();
    const run = await coap(port, '/api/test/echo?envelope=compact', ['-m', 'post', '-t', flag, '-A', flag, '-b', '1024', '-f', tmpFile(body)]);
    assert.equal(run.last.code, '2.05', run.stderr);
    const uploads = run.sent.filter((m) => logOption(m, 'Block1') !== undefined && m.code === 'POST' && /Block1:\d+\/[M_]\/1024/.test(m.options));
    assert.equal(uploads.length, Math.ceil(body.length / 1024), 'one request per 1024-byte block');
    const continues = run.received.filter((m) => m.code === '2.31');
    assert.equal(continues.length, uploads.length - 1, '2.31 Continue for every block but the last');
    assert.deepEqual(decode(run.payload).body, value);
    assert.equal(echoes(), before + 1, 'test:echo ran once');
  });
}
