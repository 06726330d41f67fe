'use strict';

// The shared C CBOR code of the firmware examples (firmware-examples/common): its own C unit
// tests (plain and under ASan/UBSan), then byte-for-byte agreement with the plugin's encoder
// (dist/codec/cbor, run `npm run build` first) in both directions, and python3-cbor2 as an
// independent reader. A missing compiler or make fails the test; nothing is skipped.

const { test } = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync, spawnSync } = require('node:child_process');
const path = require('node:path');
const { encodeCbor } = require('../../dist/codec/cbor');
const { notificationBody } = require('../../dist/kuzzle/subscriptions');
const { decodeWithCbor2 } = require('../support/peers');

const commonDir = path.resolve(__dirname, '../../firmware-examples/common');
const binary = path.join(commonDir, 'build', 'test_kcbor');

function make(args) {
  const result = spawnSync('make', ['-C', commonDir, ...args], { encoding: 'utf8' });
  if (result.error?.code === 'ENOENT') throw new Error('make is missing: apt-get install make gcc');
  const output = `${result.stdout}${result.stderr}`;
  assert.equal(result.status, 0, `make ${args.join(' ')} failed (exit ${result.status}):\n${output}`);
  return output;
}

/** Runs the built C tool; returns trimmed stdout (throws with its output on a non-zero exit). */
function tool(...args) {
  return execFileSync(binary, args, { encoding: 'utf8' }).trim();
}

const hex = (value) => encodeCbor(value).toString('hex');

test('the C unit tests pass', () => {
  const output = make(['test']);
  const match = /kcbor tests: (\d+) passed, (\d+) failed/.exec(output);
  assert.ok(match, output);
  assert.equal(Number(match[2]), 0, output);
  assert.ok(Number(match[1]) >= 100, `only ${match[1]} checks ran:\n${output}`);
});

test('the C unit tests pass under AddressSanitizer and UBSan', () => {
  const output = make(['test', 'SANITIZE=1', 'BUILD=build-sanitize']);
  assert.match(output, /kcbor tests: \d+ passed, 0 failed/);
  assert.doesNotMatch(output, /runtime error|AddressSanitizer/);
});

// The values test_kcbor.c writes with kcbor, in the same order.
const VECTORS = {
  sensor: { temperature: 21.5, humidity: 40, uptime: 12, ts: 1700000000000 },
  // kiot_simulate(&r, 12345678, 1700000000123, 3): the same arithmetic in C and JS doubles.
  reading: { temperature: 19.5 + 0.1 * 3 + 0.05, humidity: 43, uptime: 12345, ts: 1700000000123 },
  login: { username: 'sensor-1', password: 's3cret-é' },
  uints: [0, 1, 23, 24, 255, 256, 65535, 65536, 4294967295, 4294967296, 9007199254740991],
  nints: [-1, -24, -25, -256, -257, -65536, -65537, -4294967296, -4294967297, -9007199254740991],
  u64max: 18446744073709551615n,
  n64min: -18446744073709551616n,
  i64min: -9223372036854775808n,
  i64max: 9223372036854775807n,
  floats: [0.5, -2.5, 1.1, 100000.5, 3.4028234663852886e38, 5.960464477539063e-8, 6.103515625e-5, 1e300, -0,
    Infinity, -Infinity, NaN, 1.5e-5, 65504.5, 2 ** -140, 1e-40],
  texts: ['', 'a', 'é✓', 'abcdefghijklmnopqrstuvwx', 'x'.repeat(256)],
  nested: { a: [1, 2, { b: null }], c: true, d: false, e: 'x' },
  array24: Array.from({ length: 24 }, (_, i) => i),
  map24: Object.fromEntries(Array.from({ length: 24 }, (_, i) => [`k${i}`, i])),
};

function cVectors() {
  make(['all']);
  const lines = tool('--vectors').split('\n');
  return Object.fromEntries(lines.map((line) => line.split(' ')));
}

test('the C encoder writes the same bytes as the plugin encoder (preferred serialization)', () => {
  const fromC = cVectors();
  assert.deepEqual(Object.keys(fromC).sort(), Object.keys(VECTORS).sort());
  for (const [name, value] of Object.entries(VECTORS)) {
    assert.equal(fromC[name], hex(value), `vector ${name}`);
  }
  // The example, spelled out: shortest float (f9 4d60), 64-bit integer timestamp (1b ...).
  assert.equal(fromC.sensor,
    'a4' + '6b74656d7065726174757265' + 'f94d60' + '6868756d6964697479' + '1828'
    + '66757074696d65' + '0c' + '627473' + '1b0000018bcfe56800');
});

test('an independent decoder (python3-cbor2) reads the C sensor body with the right types', () => {
  const fromC = cVectors();
  const { value, types } = decodeWithCbor2(Buffer.from(fromC.sensor, 'hex'));
  assert.deepEqual(value, VECTORS.sensor);
  assert.deepEqual(types, { temperature: 'float', humidity: 'int', uptime: 'int', ts: 'int' });
  const reading = decodeWithCbor2(Buffer.from(fromC.reading, 'hex'));
  assert.deepEqual(reading.types, { temperature: 'float', humidity: 'int', uptime: 'int', ts: 'int' });
});

test('the C decoder reads what the plugin encodes', () => {
  make(['all']);
  const doc = {
    half: 1.5, single: 100000.5, double: 1.1, big: 1700000000000, max: 9007199254740991, neg: -5,
    negBig: -4294967297, text: 'é✓', yes: true, no: false, none: null, list: [1, 2, 3],
    nested: { x: { y: -1.5, z: 'deep' } }, empty: {},
  };
  const encoded = hex(doc);
  const get = (p) => tool('--get', encoded, p);
  assert.equal(get(''), `map ${Object.keys(doc).length}`);
  assert.equal(get('half'), 'float16 1.5');
  assert.equal(get('single'), 'float32 100000.5');
  assert.equal(get('double'), 'float64 1.1000000000000001');
  assert.equal(get('big'), 'uint 1700000000000');
  assert.equal(get('max'), 'uint 9007199254740991');
  assert.equal(get('neg'), 'nint -5');
  assert.equal(get('negBig'), 'nint -4294967297');
  assert.equal(get('text'), 'text é✓');
  assert.equal(get('yes'), 'true');
  assert.equal(get('no'), 'false');
  assert.equal(get('none'), 'null');
  assert.equal(get('list'), 'array 3');
  assert.equal(get('nested.x.y'), 'float16 -1.5');
  assert.equal(get('nested.x.z'), 'text deep');
  assert.equal(get('empty'), 'map 0');
  const missing = spawnSync(binary, ['--get', encoded, 'nested.nope'], { encoding: 'utf8' });
  assert.equal(missing.status, 1);
  assert.equal(missing.stdout.trim(), 'error not found');
  // 64-bit integers at both ends of the range (BigInt in, exact out).
  assert.equal(tool('--get', hex(18446744073709551615n), ''), 'uint 18446744073709551615');
  assert.equal(tool('--get', hex(-9223372036854775808n), ''), 'nint -9223372036854775808');
});

test('kiot_parse_command reads a compact notification as the plugin sends it', () => {
  make(['all']);
  // A Kuzzle document notification, as the plugin's compact envelope trims it for a device.
  const payload = {
    status: 200, requestId: 'r1', timestamp: 1700000000000, volatile: null, index: 'iot', collection: 'commands',
    controller: 'document', action: 'create', protocol: 'http', scope: 'in', state: 'done', type: 'document',
    event: 'write', node: 'n1',
    result: { _id: 'cmd-1', _source: { period: 200, _kuzzle_info: { author: 'admin', createdAt: 1700000000000, updatedAt: null, updater: null } } },
  };
  const compact = notificationBody(payload, 'channel-1', 'compact');
  assert.deepEqual(Object.keys(compact), ['type', 'action', 'event', 'scope', 'result']);
  assert.equal(tool('--command', hex(compact)), 'action=create id=cmd-1 has_period=1 period_ms=200');
  // Out of range, not an integer, no _source (delete): no period, no error.
  const withPeriod = (period) => ({ ...compact, result: { _id: 'cmd-2', _source: { period } } });
  assert.match(tool('--command', hex(withPeriod(10))), /has_period=0/);
  assert.match(tool('--command', hex(withPeriod(250.5))), /has_period=0/);
  assert.match(tool('--command', hex(withPeriod('300'))), /has_period=0/);
  assert.equal(tool('--command', hex({ ...compact, action: 'delete', result: { _id: 'cmd-3' } })),
    'action=delete id=cmd-3 has_period=0 period_ms=0');
});

test('kiot_parse_login reads a compact auth:login result', () => {
  make(['all']);
  const jwt = 'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJfaWQiOiJzZW5zb3ItMSJ9.c2lnbmF0dXJl';
  assert.equal(tool('--login', hex({ _id: 'sensor-1', jwt, expiresAt: 1700003600000, ttl: 3600000 })),
    `jwt=${jwt} expires_at=1700003600000`);
  // An API key never expires (expiresAt -1).
  assert.equal(tool('--login', hex({ _id: 'sensor-1', jwt, expiresAt: -1, ttl: -1 })), `jwt=${jwt} expires_at=-1`);
});
