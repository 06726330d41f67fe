'use strict';
const { test } = require('node:test');
const assert = require('node:assert/strict');
const packet = require('coap-packet');
const { encodeMessage, decodeMessage, readUint, encodeUint, withOption, findOption } = require('../../dist/coap/message');

test('encodeMessage writes what coap-packet parses back, options with extended deltas and lengths', () => {
  const token = Buffer.from('0102030405060708', 'hex');
  const options = [
    { number: 11, value: Buffer.from('api') },
    { number: 12, value: encodeUint(60) },
    { number: 15, value: Buffer.from('x'.repeat(20)) }, // 1-byte extended length
    { number: 28, value: encodeUint(5000) }, // 1-byte extended delta
    { number: 60, value: Buffer.from('y'.repeat(300)) }, // 2-byte extended length
    { number: 65001, value: Buffer.alloc(0) }, // 2-byte extended delta
  ];
  const payload = Buffer.from('hello');
  const wire = encodeMessage(2, 0x45, 0xbeef, token, options, payload);
  const parsed = packet.parse(wire);
  assert.equal(parsed.code, '2.05');
  assert.equal(parsed.ack, true);
  assert.equal(parsed.messageId, 0xbeef);
  assert.deepEqual(parsed.token, token);
  assert.deepEqual(parsed.payload, payload);
  assert.deepEqual(
    parsed.options.map((o) => o.value),
    options.map((o) => o.value),
  );
  assert.deepEqual(decodeMessage(wire).options.map((o) => o.number), [11, 12, 15, 28, 60, 65001]);
});

test('encodeMessage: no payload marker without payload; empty ACK is exactly 4 bytes', () => {
  assert.deepEqual(encodeMessage(2, 0, 0x1234, Buffer.alloc(0), [], null), Buffer.from('60001234', 'hex'));
  assert.deepEqual(encodeMessage(3, 0, 7, Buffer.alloc(0), [], null), Buffer.from('70000007', 'hex'));
  assert.deepEqual(encodeMessage(1, 0x44, 1, Buffer.from([0xaa]), [], Buffer.alloc(0)), Buffer.from('514400' + '01aa', 'hex'));
});

test('encodeMessage supports RFC 8974 extended tokens and refuses unsorted options', () => {
  const token = Buffer.alloc(20, 7);
  const wire = encodeMessage(0, 0x02, 9, token, [], null);
  assert.equal(wire[0] & 0x0f, 13);
  assert.deepEqual(decodeMessage(wire).token, token);
  assert.throws(() => encodeMessage(0, 2, 1, Buffer.alloc(0), [{ number: 12, value: Buffer.alloc(0) }, { number: 11, value: Buffer.alloc(0) }], null));
});

test('decodeMessage gives numbers for codes, types and options, and throws on garbage', () => {
  const wire = packet.generate({
    confirmable: true, code: 'POST', messageId: 42, token: Buffer.from([1, 2]),
    options: [{ name: 'Uri-Path', value: Buffer.from('api') }, { name: '2051', value: Buffer.from('z') }],
    payload: Buffer.from([0xa0]),
  });
  const message = decodeMessage(wire);
  assert.equal(message.type, 0);
  assert.equal(message.code, 2);
  assert.equal(message.messageId, 42);
  assert.deepEqual(message.options.map((o) => o.number), [11, 2051]);
  assert.deepEqual(message.payload, Buffer.from([0xa0]));
  assert.throws(() => decodeMessage(Buffer.from([0x40, 1])));
  assert.throws(() => decodeMessage(Buffer.from([0x80, 1, 0, 0]))); // version 2
  assert.throws(() => decodeMessage(Buffer.from([0x4f, 1, 0, 0]))); // token length 15
});

test('uint options: shortest big-endian form, zero is empty', () => {
  assert.deepEqual(encodeUint(0), Buffer.alloc(0));
  assert.deepEqual(encodeUint(255), Buffer.from([255]));
  assert.deepEqual(encodeUint(256), Buffer.from([1, 0]));
  assert.deepEqual(encodeUint(0x01020304), Buffer.from([1, 2, 3, 4]));
  assert.equal(readUint(Buffer.from([1, 0])), 256);
  assert.equal(readUint(Buffer.alloc(0)), 0);
});

test('withOption keeps options sorted and replaces a present number; findOption reads the first', () => {
  const a = Buffer.from('a');
  const b = Buffer.from('b');
  let options = withOption([], 23, a);
  options = withOption(options, 12, b);
  options = withOption(options, 60, a);
  options = withOption(options, 23, b);
  assert.deepEqual(options.map((o) => [o.number, o.value.toString()]), [[12, 'b'], [23, 'b'], [60, 'a']]);
  assert.equal(findOption({ options }, 23).toString(), 'b');
  assert.equal(findOption({ options }, 24), undefined);
});
