'use strict';

const { describe, test } = require('node:test');
const assert = require('node:assert/strict');
const { CONTENT_FORMAT, decodePayload, encodePayload, isBodyFormat } = require('../../dist/codec/contentFormat');
const { PayloadError, UnsupportedFormatError } = require('../../dist/codec/errors');

describe('Content-Format', () => {
  test('CoAP registry numbers', () => {
    assert.deepEqual(CONTENT_FORMAT, { TEXT_PLAIN: 0, LINK_FORMAT: 40, JSON: 50, CBOR: 60 });
  });

  test('isBodyFormat: JSON and CBOR only', () => {
    assert.equal(isBodyFormat(50), true);
    assert.equal(isBodyFormat(60), true);
    for (const other of [0, 40, 41, 42, 47, 61, 11050, 65535]) assert.equal(isBodyFormat(other), false, String(other));
  });

  test('decodePayload picks the codec', () => {
    assert.deepEqual(decodePayload(CONTENT_FORMAT.CBOR, Buffer.from('a1616101', 'hex')), { a: 1 });
    assert.deepEqual(decodePayload(CONTENT_FORMAT.JSON, Buffer.from('{"a":1}')), { a: 1 });
  });

  test('an empty payload is no body (undefined) in both formats', () => {
    assert.equal(decodePayload(CONTENT_FORMAT.CBOR, Buffer.alloc(0)), undefined);
    assert.equal(decodePayload(CONTENT_FORMAT.JSON, Buffer.alloc(0)), undefined);
  });

  test('a bad payload is a PayloadError in both formats', () => {
    assert.throws(() => decodePayload(CONTENT_FORMAT.CBOR, Buffer.from('a161', 'hex')), PayloadError);
    assert.throws(() => decodePayload(CONTENT_FORMAT.JSON, Buffer.from('{')), PayloadError);
  });

  test('encodePayload picks the codec; undefined gives an empty payload', () => {
    assert.equal(encodePayload(CONTENT_FORMAT.CBOR, { now: 1700000000000 }).toString('hex'), 'a1636e6f771b0000018bcfe56800');
    assert.equal(encodePayload(CONTENT_FORMAT.JSON, { now: 1700000000000 }).toString(), '{"now":1700000000000}');
    assert.equal(encodePayload(CONTENT_FORMAT.CBOR, null).toString('hex'), 'f6');
    assert.equal(encodePayload(CONTENT_FORMAT.JSON, null).toString(), 'null');
    assert.equal(encodePayload(CONTENT_FORMAT.CBOR, undefined).length, 0);
    assert.equal(encodePayload(CONTENT_FORMAT.JSON, undefined).length, 0);
  });

  test('other formats throw UnsupportedFormatError, which is not a PayloadError', () => {
    for (const call of [() => decodePayload(0, Buffer.from('hi')), () => decodePayload(40, Buffer.alloc(0)), () => encodePayload(40, {})]) {
      assert.throws(call, (error) => {
        assert.ok(error instanceof UnsupportedFormatError);
        assert.ok(!(error instanceof PayloadError));
        assert.equal(error.name, 'UnsupportedFormatError');
        assert.match(error.message, /^unsupported Content-Format (0|40)$/);
        assert.ok(error.format === 0 || error.format === 40);
        return true;
      });
    }
  });
});
