'use strict';

const { describe, test } = require('node:test');
const assert = require('node:assert/strict');
const { encodeJson, decodeJson } = require('../../dist/codec/json');
const { PayloadError } = require('../../dist/codec/errors');

const rejects = (buf, message) => assert.throws(() => decodeJson(buf), (error) => {
  assert.ok(error instanceof PayloadError, `${error.name}: ${error.message}`);
  assert.match(error.message, /^invalid JSON payload: /);
  assert.match(error.message, message);
  return true;
});

describe('encodeJson', () => {
  test('writes UTF-8 JSON', () => {
    const encoded = encodeJson({ label: 'Salle de réunion', now: 1700000000000, list: [1.5, null, true] });
    assert.ok(Buffer.isBuffer(encoded));
    assert.equal(encoded.toString('utf8'), '{"label":"Salle de réunion","now":1700000000000,"list":[1.5,null,true]}');
  });

  test('undefined, a function or a symbol at the top is null, as encodeCbor writes it', () => {
    assert.equal(encodeJson(undefined).toString(), 'null');
    assert.equal(encodeJson(() => 1).toString(), 'null');
    assert.equal(encodeJson(Symbol('s')).toString(), 'null');
  });

  test('follows JSON.stringify for the rest (skipped keys, toJSON, Date)', () => {
    assert.equal(encodeJson({ u: undefined, d: new Date(0), t: { toJSON: () => 'x' } }).toString(),
      '{"d":"1970-01-01T00:00:00.000Z","t":"x"}');
  });
});

describe('decodeJson', () => {
  test('parses UTF-8 JSON', () => {
    assert.deepEqual(decodeJson(Buffer.from('{"a":[1,"é",null]}')), { a: [1, 'é', null] });
    assert.equal(decodeJson(Buffer.from(' 42 ')), 42);
  });

  test('round trip', () => {
    const value = { requestId: 'r-1', status: 200, result: { now: 1700000000000, text: '😀 €' } };
    assert.deepEqual(decodeJson(encodeJson(value)), value);
  });

  test('a leading UTF-8 BOM is ignored', () => {
    assert.deepEqual(decodeJson(Buffer.from('\ufeff{"a":1}')), { a: 1 });
  });

  test('invalid UTF-8 is rejected, not replaced', () => {
    rejects(Buffer.from('7b2261223a2261c3287d', 'hex'), /not valid UTF-8/); // {"a":"a\xc3(}
    rejects(Buffer.from('22c0af22', 'hex'), /not valid UTF-8/); // overlong encoding
    rejects(Buffer.from('22eda08022', 'hex'), /not valid UTF-8/); // encoded surrogate
  });

  test('invalid JSON is rejected with the parser message', () => {
    rejects(Buffer.from('{"a":'), /JSON/);
    rejects(Buffer.from('{a:1}'), /JSON|property name/);
    rejects(Buffer.from('{"a":1} x'), /JSON|Unexpected/);
    rejects(Buffer.alloc(0), /JSON|end/);
  });
});
