'use strict';

const { describe, test } = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const { Encoder } = require('cbor-x');
const { encodeCbor, decodeCbor } = require('../../dist/codec/cbor');
const { PayloadError } = require('../../dist/codec/errors');
const { MAX_NESTING } = require('../../dist/codec/limits');

const hex = (value) => encodeCbor(value).toString('hex');
const bytes = (hexText) => Buffer.from(hexText.replace(/\s+/g, ''), 'hex');
/** A text string item, head included (for expected bytes). */
function text(s) {
  const utf8 = Buffer.from(s, 'utf8');
  const n = utf8.length;
  const head = n < 24 ? (0x60 + n).toString(16)
    : n < 0x100 ? '78' + n.toString(16).padStart(2, '0')
      : n < 0x10000 ? '79' + n.toString(16).padStart(4, '0')
        : '7a' + n.toString(16).padStart(8, '0');
  return head + utf8.toString('hex');
}

describe('encodeCbor: preferred serialization, byte for byte', () => {
  const cases = [
    ['{a:1}', { a: 1 }, 'a1 6161 01'],
    ['0', 0, '00'],
    ['23', 23, '17'],
    ['24', 24, '18 18'],
    ['255', 255, '18 ff'],
    ['256', 256, '19 0100'],
    ['65535', 65535, '19 ffff'],
    ['65536', 65536, '1a 00010000'],
    ['2^32 - 1', 2 ** 32 - 1, '1a ffffffff'],
    ['2^32', 2 ** 32, '1b 0000000100000000'],
    ['1700000000000 (Kuzzle ms timestamp)', 1700000000000, '1b 0000018bcfe56800'],
    ['2^53 - 1', Number.MAX_SAFE_INTEGER, '1b 001fffffffffffff'],
    ['largest double below 2^64', 2 ** 64 - 2048, '1b fffffffffffff800'],
    ['-1', -1, '20'],
    ['-24', -24, '37'],
    ['-25', -25, '38 18'],
    ['-256', -256, '38 ff'],
    ['-257', -257, '39 0100'],
    ['-2^32', -(2 ** 32), '3a ffffffff'],
    ['-2^32 - 1', -(2 ** 32) - 1, '3b 0000000100000000'],
    ['-(2^53 - 1)', -Number.MAX_SAFE_INTEGER, '3b 001ffffffffffffe'],
    ['-2^64 as a Number', -(2 ** 64), '3b ffffffffffffffff'],
    ['2^64 as a Number (no integer form)', 2 ** 64, 'fa 5f800000'],
    ['5n', 5n, '05'],
    ['2^32 as BigInt', 2n ** 32n, '1b 0000000100000000'],
    ['2^64 - 1 as BigInt', 2n ** 64n - 1n, '1b ffffffffffffffff'],
    ['-1n', -1n, '20'],
    ['-2^64 as BigInt', -(2n ** 64n), '3b ffffffffffffffff'],
    ['1.5', 1.5, 'f9 3e00'],
    ['-4.25', -4.25, 'f9 c440'],
    ['65504.5 (needs float32)', 65504.5, 'fa 477fe080'],
    ['100000.5', 100000.5, 'fa 47c35040'],
    ['0.1', 0.1, 'fb 3fb999999999999a'],
    ['1.1e300', 1.1e300, 'fb 7e3a47dc2f33b492'],
    ['2^-14 (smallest float16 normal)', 2 ** -14, 'f9 0400'],
    ['2^-24 (smallest float16 subnormal)', 2 ** -24, 'f9 0001'],
    ['1023 * 2^-24 (largest float16 subnormal)', 1023 * 2 ** -24, 'f9 03ff'],
    ['2^-25 (below float16)', 2 ** -25, 'fa 33000000'],
    ['1 + 2^-10', 1 + 2 ** -10, 'f9 3c01'],
    ['1 + 2^-11 (needs float32)', 1 + 2 ** -11, 'fa 3f801000'],
    ['float32 max', 3.4028234663852886e38, 'fa 7f7fffff'],
    ['-0', -0, 'f9 8000'],
    ['NaN', NaN, 'f9 7e00'],
    ['Infinity', Infinity, 'f9 7c00'],
    ['-Infinity', -Infinity, 'f9 fc00'],
    ['false', false, 'f4'],
    ['true', true, 'f5'],
    ['null', null, 'f6'],
    ['undefined at the top', undefined, 'f6'],
    ['empty string', '', '60'],
    ['"a"', 'a', '61 61'],
    ['2-byte UTF-8', 'ü', '62 c3bc'],
    ['3-byte UTF-8', '€', '63 e282ac'],
    ['4-byte UTF-8 (surrogate pair)', '😀', '64 f09f9880'],
    ['lone surrogate → U+FFFD', '\ud800', '63 efbfbd'],
    ['string of 23', 'x'.repeat(23), '77' + '78'.repeat(23)],
    ['string of 24', 'x'.repeat(24), '78 18' + '78'.repeat(24)],
    ['string of 255', 'x'.repeat(255), '78 ff' + '78'.repeat(255)],
    ['string of 256', 'x'.repeat(256), '79 0100' + '78'.repeat(256)],
    ['string of 65536', 'x'.repeat(65536), '7a 00010000' + '78'.repeat(65536)],
    ['11 × é: 22 bytes, head shrinks to 1', 'é'.repeat(11), '76' + 'c3a9'.repeat(11)],
    ['12 × é: 24 bytes', 'é'.repeat(12), '78 18' + 'c3a9'.repeat(12)],
    ['100 × é: 200 bytes, head shrinks to 2', 'é'.repeat(100), '78 c8' + 'c3a9'.repeat(100)],
    ['100 × €: 300 bytes', '€'.repeat(100), '79 012c' + 'e282ac'.repeat(100)],
    ['empty array', [], '80'],
    ['array of 23', new Array(23).fill(0), '97' + '00'.repeat(23)],
    ['array of 24', new Array(24).fill(0), '98 18' + '00'.repeat(24)],
    ['array of 256', new Array(256).fill(1), '99 0100' + '01'.repeat(256)],
    ['nested arrays', [1, [2, 3], []], '83 01 82 02 03 80'],
    ['undefined, function, symbol in an array → null', [undefined, () => 1, Symbol('s'), , 1], '85 f6 f6 f6 f6 01'],
    ['empty map', {}, 'a0'],
    ['keys skipped as JSON does', { u: undefined, f() {}, s: Symbol('s'), x: 1 }, 'a1 6178 01'],
    ['insertion order', { b: 1, a: 2 }, 'a2 6162 01 6161 02'],
    ['Buffer → byte string', Buffer.from([1, 2, 3]), '43 010203'],
    ['Uint8Array → byte string', new Uint8Array([0xff]), '41 ff'],
    ['empty byte string', new Uint8Array(0), '40'],
    ['Date → ISO string', new Date(0), text('1970-01-01T00:00:00.000Z')],
    ['invalid Date → null', new Date(NaN), 'f6'],
    ['toJSON()', { toJSON: () => ({ id: 7 }) }, 'a1 626964 07'],
  ];
  for (const [name, value, expected] of cases) {
    test(name, () => assert.equal(hex(value), expected.replace(/\s+/g, '')));
  }

  test('maps of 23, 24 and 256 entries (head widened after the entries)', () => {
    for (const [size, head] of [[23, 'b7'], [24, 'b818'], [256, 'b90100']]) {
      const map = {};
      let body = '';
      for (let i = 0; i < size; i++) {
        map[`k${i}`] = true;
        body += text(`k${i}`) + 'f5';
      }
      assert.equal(hex(map), head + body, `${size} entries`);
    }
  });

  test('Kuzzle response envelope', () => {
    const envelope = {
      requestId: '6f9619ff-8b86-d011-b42d-00cf4fc964ff', status: 200, error: null,
      controller: 'server', action: 'now', collection: null, index: null, volatile: null,
      result: { now: 1700000000000 }, deprecations: [], node: 'knode-abc', headers: {},
    };
    const expected = [
      'ac',
      text('requestId'), text('6f9619ff-8b86-d011-b42d-00cf4fc964ff'),
      text('status'), '18c8',
      text('error'), 'f6',
      text('controller'), text('server'),
      text('action'), text('now'),
      text('collection'), 'f6',
      text('index'), 'f6',
      text('volatile'), 'f6',
      text('result'), 'a1', text('now'), '1b0000018bcfe56800',
      text('deprecations'), '80',
      text('node'), text('knode-abc'),
      text('headers'), 'a0',
    ].join('');
    assert.equal(hex(envelope), expected);
  });

  test('same bytes as cbor-x in preferred mode where cbor-x is preferred (no floats, |ints| <= 2^32)', () => {
    const cborx = new Encoder({ variableMapSize: true, useRecords: false });
    const random = lcg(42);
    for (let i = 0; i < 500; i++) {
      const value = randomValue(random, 0);
      assert.equal(hex(value), cborx.encode(value).toString('hex'), JSON.stringify(value));
    }
  });

  test('the returned Buffer is a copy owned by the caller', () => {
    const first = encodeCbor({ x: 1 });
    encodeCbor({ y: 'overwrite the shared buffer' });
    assert.equal(first.toString('hex'), 'a1617801');
  });

  test('large values grow the buffer, and later small values are still right', () => {
    const big = { text: 'é'.repeat(300000), list: Array.from({ length: 20000 }, (_, i) => ({ i, t: i * 1000000 })) };
    const encoded = encodeCbor(big);
    assert.deepEqual(decodeCbor(encoded), big);
    assert.equal(hex({ a: 1 }), 'a1616101');
  });

  test('a toJSON() that itself calls encodeCbor', () => {
    const value = { outer: 1, inner: { toJSON: () => encodeCbor({ b: 2 }).toString('hex') }, after: true };
    assert.equal(hex(value), 'a3' + text('outer') + '01' + text('inner') + text('a1616202') + text('after') + 'f5');
  });

  test(`nesting: ${MAX_NESTING} levels encode, one more throws a RangeError`, () => {
    assert.equal(encodeCbor(nestedArrays(MAX_NESTING)).length, MAX_NESTING);
    assert.throws(() => encodeCbor(nestedArrays(MAX_NESTING + 1)), { name: 'RangeError', message: /nesting deeper than 256 levels/ });
  });

  test('a cyclic value throws a clear error, and the encoder stays usable', () => {
    const cyclic = { a: 1 };
    cyclic.self = cyclic;
    assert.throws(() => encodeCbor(cyclic), { name: 'RangeError', message: /cannot encode CBOR: nesting deeper than 256 levels \(cyclic value\?\)/ });
    assert.equal(hex([1, 2]), '820102');
  });

  test('BigInt outside the 64-bit range throws', () => {
    assert.throws(() => encodeCbor(2n ** 64n), { name: 'RangeError', message: /outside the 64-bit integer range/ });
    assert.throws(() => encodeCbor({ n: -(2n ** 64n) - 1n }), RangeError);
  });
});

describe('encodeCbor checked by an independent decoder (Debian python3-cbor2)', () => {
  test('a rich value decodes to the same data, integers as Python ints', () => {
    const value = {
      requestId: '6f9619ff-8b86-d011-b42d-00cf4fc964ff',
      status: 200,
      now: 1700000000000,
      ints: [0, 23, 24, 255, 256, 65535, 65536, 2 ** 32 - 1, 2 ** 32, Number.MAX_SAFE_INTEGER, 2 ** 64 - 2048,
        -1, -24, -25, -257, -(2 ** 32), -(2 ** 32) - 1, -Number.MAX_SAFE_INTEGER, -(2 ** 64),
        2n ** 64n - 1n, -(2n ** 64n)],
      floats: [1.5, 0.1, 100000.5, 65504.5, 2 ** -24, 2 ** -25, 1.1e300, -0, NaN, Infinity, -Infinity, 2 ** 64],
      strings: ['', 'ascii', 'Salle de réunion', '€uro', '😀', 'x'.repeat(300), 'é'.repeat(100)],
      bytes: Buffer.from('00ff10', 'hex'),
      flags: [true, false, null, undefined],
      skipped: undefined,
      when: new Date(1700000000000),
      custom: { toJSON: () => ['converted'] },
      nested: { a: { b: { c: [{ d: [] }, {}] } } },
      many: Object.fromEntries(Array.from({ length: 30 }, (_, i) => [`key${i}`, i * 1.5])),
    };
    assert.deepEqual(decodeWithCbor2(encodeCbor(value)), describeExpected(value));
  });

  test('the float width chosen is the shortest that Python struct packs exactly', () => {
    const random = lcg(7);
    const floats = [];
    for (let i = 0; i < 300; i++) {
      const exponent = Math.floor(random() * 80) - 40;
      const mantissa = Math.floor(random() * 2048) / 1024; // few significant bits: often fits float16/32
      floats.push((random() < 0.5 ? -1 : 1) * mantissa * 2 ** exponent);
      floats.push(random() * 10 ** exponent);
    }
    const candidates = floats.filter((f) => !Number.isInteger(f));
    const ours = candidates.map((f) => hex(f));
    const python = execPython(`
import struct, sys, json
out = []
for v in json.load(sys.stdin):
    for code, fmt in ((0xf9, '>e'), (0xfa, '>f'), (0xfb, '>d')):
        try:
            packed = struct.pack(fmt, v)
        except OverflowError:
            continue
        if struct.unpack(fmt, packed)[0] == v:
            out.append(bytes([code]).hex() + packed.hex())
            break
print(json.dumps(out))
`, Buffer.from(JSON.stringify(candidates)));
    assert.deepEqual(ours, JSON.parse(python));
  });
});

describe('decodeCbor', () => {
  const rejects = (hexText, message) => assert.throws(() => decodeCbor(bytes(hexText)), (error) => {
    assert.ok(error instanceof PayloadError, `${error.name}: ${error.message}`);
    assert.equal(error.name, 'PayloadError');
    assert.match(error.message, /^invalid CBOR payload: /);
    assert.match(error.message, message);
    return true;
  });

  test('round trip of the encoder output', () => {
    const value = { s: 'Salle de réunion', n: [0, -1, 1.5, 0.1, 1700000000000, -Number.MAX_SAFE_INTEGER], o: { a: null, b: [true, false] } };
    assert.deepEqual(decodeCbor(encodeCbor(value)), value);
  });

  test('maps are plain objects, byte strings are Buffers copied out of the input', () => {
    const input = bytes('a2 6161 a0 6162 43 010203');
    const decoded = decodeCbor(input);
    assert.equal(Object.getPrototypeOf(decoded), Object.prototype);
    assert.equal(Object.getPrototypeOf(decoded.a), Object.prototype);
    assert.ok(Buffer.isBuffer(decoded.b));
    input[input.length - 1] = 0xff;
    assert.deepEqual([...decoded.b], [1, 2, 3]);
  });

  test('64-bit integers come back as exact Numbers, never BigInt', () => {
    assert.equal(decodeCbor(bytes('1b 0000018bcfe56800')), 1700000000000);
    assert.equal(decodeCbor(bytes('1b 001fffffffffffff')), Number.MAX_SAFE_INTEGER);
    assert.equal(decodeCbor(bytes('3b 001ffffffffffffe')), -Number.MAX_SAFE_INTEGER);
    assert.equal(decodeCbor(bytes('1b 0000000000000001')), 1);
    assert.deepEqual(decodeCbor(bytes('a1 6174 1b0000018bcfe56800')), { t: 1700000000000 });
  });

  test('64-bit integers a Number cannot hold exactly are rejected', () => {
    rejects('1b 0020000000000000', /integer beyond 2\^53 - 1 at byte 0/);
    rejects('1b ffffffffffffffff', /integer beyond 2\^53 - 1/);
    rejects('3b 001fffffffffffff', /integer beyond -\(2\^53 - 1\)/);
  });

  test('non-preferred but valid encodings that devices may send are accepted', () => {
    assert.equal(decodeCbor(bytes('18 01')), 1);
    assert.deepEqual(decodeCbor(bytes('b9 0001 6161 01')), { a: 1 });
    assert.equal(decodeCbor(bytes('fb 3ff8000000000000')), 1.5);
    assert.equal(decodeCbor(bytes('fa 3fc00000')), 1.5);
    assert.equal(decodeCbor(bytes('f9 3e00')), 1.5);
  });

  test('indefinite-length arrays and maps are accepted', () => {
    assert.deepEqual(decodeCbor(bytes('9f 01 02 ff')), [1, 2]);
    assert.deepEqual(decodeCbor(bytes('bf 6161 9f ff 6162 bf ff ff')), { a: [], b: {} });
    assert.deepEqual(decodeCbor(bytes('9f 9f 9f ff ff ff')), [[[]]]);
    assert.deepEqual(decodeCbor(bytes('bf 6474656d70 f9 4d60 ff')), { temp: 21.5 });
  });

  test('integer map keys become property names (SenML-style labels)', () => {
    assert.deepEqual(decodeCbor(bytes('a2 01 6161 21 6162')), { 1: 'a', '-2': 'b' });
  });

  test('the self-described CBOR tag 55799 is transparent', () => {
    assert.deepEqual(decodeCbor(bytes('d9d9f7 a1 6161 01')), { a: 1 });
    assert.deepEqual(decodeCbor(bytes('82 d9d9f7 01 02')), [1, 2]);
  });

  test('every other tag is rejected instead of becoming a Tag, Date, BigInt, Set, typed array or reference', () => {
    rejects('c0 74 323032332d31312d31345432323a31333a32305a', /unsupported tag 0 at byte 0/); // date string
    rejects('c1 1a 6553f100', /unsupported tag 1/); // epoch date
    rejects('c2 49 010000000000000000', /unsupported tag 2/); // bignum
    rejects('a1 6161 d8 20 6161', /unsupported tag 32 at byte 3/); // URI inside a map
    rejects('d8 1c 81 d8 1d 00', /unsupported tag 28/); // shared reference (cycle)
    rejects('d8 1b 83 65 4572726f72 6161 80', /unsupported tag 27/); // generic object (new Error)
    rejects('d9 0102 82 01 02', /unsupported tag 258/); // Set
    rejects('d8 40 43 010203', /unsupported tag 64/); // typed array
    rejects('d9 dfff 84 19e000 81 6161 6162 01', /unsupported tag 57343/); // cbor-x record
  });

  test('simple values other than false/true/null/undefined are rejected', () => {
    rejects('e0', /unsupported simple value 0/);
    rejects('f0', /unsupported simple value 16/);
    rejects('f8 20', /unsupported simple value 32/);
    assert.equal(decodeCbor(bytes('f7')), undefined);
  });

  test('malformed input', () => {
    rejects('ff', /unexpected break at byte 0/);
    rejects('1c', /reserved additional information 28/);
    rejects('9f 1e ff', /reserved additional information 30 at byte 1/);
    rejects('1f', /indefinite length is not allowed for major type 0/);
    rejects('df 00', /indefinite length is not allowed for major type 6/);
    rejects('7f 6161 ff', /indefinite-length strings are not supported/);
    rejects('5f 4101 ff', /indefinite-length strings are not supported/);
    rejects('62 c328', /text string is not valid UTF-8/);
    rejects('62 c0af', /text string is not valid UTF-8/); // overlong
    rejects('a1 80 01', /map key is not a text string or an integer/);
    rejects('a1 f5 01', /map key is not a text string or an integer/);
    rejects('a1 4161 01', /map key is not a text string or an integer/);
    rejects('bf 6161 ff', /unexpected break/); // key without value
  });

  test('truncated input', () => {
    for (const truncated of ['18', '19 01', '1a 000000', '1b 00000000000000', '62 61', '82 01', 'a1 6161',
      '9f 01', 'bf 6161 01', 'fa 3f80', '5a 00000001', '9b ffffffffffffffff', 'd9 d9']) {
      rejects(truncated, /truncated/);
    }
  });

  test('trailing bytes after the first item', () => {
    rejects('00 00', /1 trailing byte\(s\) after the first item at byte 1/);
    rejects('a0 ff ff', /2 trailing byte\(s\)/);
  });

  test('an empty buffer', () => {
    rejects('', /empty payload/);
  });

  test(`nesting: ${MAX_NESTING} levels decode, deeper input is rejected without a stack overflow`, () => {
    assert.deepEqual(decodeCbor(Buffer.from(encodeCbor(nestedArrays(MAX_NESTING)))), nestedArrays(MAX_NESTING));
    rejects('81'.repeat(MAX_NESTING) + '80', /nesting deeper than 256 levels/);
    rejects('9f'.repeat(200000), /nesting deeper than 256 levels/);
  });

  test('decoded data always survives JSON', () => {
    const decoded = decodeCbor(bytes('bf 6161 9f 01 fb3fb999999999999a f6 f7 ff 6162 a1 01 f5 ff'));
    assert.equal(JSON.stringify(decoded), '{"a":[1,0.1,null,null],"b":{"1":true}}');
  });
});

function nestedArrays(depth) {
  let value = [];
  for (let i = 1; i < depth; i++) value = [value];
  return value;
}

/** Deterministic pseudo-random numbers in [0, 1). */
function lcg(seed) {
  let state = seed >>> 0;
  return () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state / 2 ** 32;
  };
}

function randomValue(random, depth) {
  const kind = Math.floor(random() * (depth > 3 ? 5 : 7));
  switch (kind) {
    case 0: return Math.floor((random() * 2 - 1) * 2 ** Math.floor(random() * 33));
    case 1: return ['', 'a', 'é', '€uro', '😀', 'x'.repeat(Math.floor(random() * 300))][Math.floor(random() * 6)];
    case 2: return random() < 0.5;
    case 3: return null;
    case 4: return 'é'.repeat(Math.floor(random() * 100));
    case 5: return Array.from({ length: Math.floor(random() * 30) }, () => randomValue(random, depth + 1));
    default: {
      const map = {};
      const size = Math.floor(random() * 30);
      for (let i = 0; i < size; i++) map[`key${Math.floor(random() * 1000)}`] = randomValue(random, depth + 1);
      return map;
    }
  }
}

function execPython(script, input) {
  try {
    return execFileSync('/usr/bin/python3', ['-c', script], { input, maxBuffer: 64 * 1024 * 1024 }).toString();
  } catch (error) {
    throw new Error(`the independent CBOR check needs /usr/bin/python3 with Debian's python3-cbor2: ${error.stderr || error.message}`);
  }
}

/** Decodes with cbor2 and describes every value with its Python type. */
function decodeWithCbor2(encoded) {
  return JSON.parse(execPython(`
import cbor2, io, json, math, sys
def describe(v):
    if v is None: return ['null']
    if isinstance(v, bool): return ['bool', v]
    if isinstance(v, int): return ['int', str(v)]
    if isinstance(v, float):
        if math.isnan(v): return ['float', 'nan']
        if math.isinf(v): return ['float', 'inf' if v > 0 else '-inf']
        return ['float', v]
    if isinstance(v, str): return ['str', v]
    if isinstance(v, bytes): return ['bytes', v.hex()]
    if isinstance(v, list): return ['list', [describe(x) for x in v]]
    if isinstance(v, dict): return ['map', [[k, describe(x)] for k, x in v.items()]]
    return ['unexpected', type(v).__name__]
fp = io.BytesIO(sys.stdin.buffer.read())
value = cbor2.load(fp)
if fp.read():
    sys.exit('trailing bytes after the first item')
print(json.dumps(describe(value)))
`, encoded));
}

/** What cbor2 should see for a value, following JSON.stringify's mapping. */
function describeExpected(value) {
  if (value === null || value === undefined || typeof value === 'function' || typeof value === 'symbol') return ['null'];
  if (typeof value === 'boolean') return ['bool', value];
  if (typeof value === 'bigint') return ['int', value.toString()];
  if (typeof value === 'number') {
    if (Number.isInteger(value) && !Object.is(value, -0) && value >= -(2 ** 64) && value < 2 ** 64) return ['int', BigInt(value).toString()];
    if (Number.isNaN(value)) return ['float', 'nan'];
    if (!Number.isFinite(value)) return ['float', value > 0 ? 'inf' : '-inf'];
    return ['float', value];
  }
  if (typeof value === 'string') return ['str', value];
  if (value instanceof Uint8Array) return ['bytes', Buffer.from(value).toString('hex')];
  if (Array.isArray(value)) return ['list', value.map(describeExpected)];
  if (typeof value.toJSON === 'function') return describeExpected(value.toJSON());
  return ['map', Object.entries(value)
    .filter(([, v]) => v !== undefined && typeof v !== 'function' && typeof v !== 'symbol')
    .map(([k, v]) => [k, describeExpected(v)])];
}
