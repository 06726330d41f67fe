'use strict';
// Message deduplication (RFC 7252 §4.5): a retransmitted CON runs once and gets the same answer.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { bootWithRawClient } = require('./coap-helpers');
const { sleep } = require('../support/util');

let double;
let raw;
let stop;
before(async () => ({ double, raw, stop } = await bootWithRawClient({
  coap: { piggybackWindowMs: 1500, retransmission: { ackTimeoutMs: 200, ackRandomFactor: 1, maxRetransmit: 2 } },
})));
after(() => stop?.());

const calls = (action) => double.calls.get(action) ?? 0;

test('the same CON datagram twice: one execution, two byte-identical piggybacked answers', async () => {
  const before = calls('server:now');
  const { datagram, messageId: mid } = await raw.send({ path: '/api/server/now' });
  const first = await raw.waitFor((m) => m.messageId === mid && m.type === 'ACK');
  assert.equal(first.code, '2.05');
  await sleep(30); // a later, distinct Date.now() would show a second execution
  await raw.sendRaw(datagram);
  await raw.waitFor((m) => m.messageId === mid && m !== first);
  const answers = raw.messages.filter((m) => m.messageId === mid);
  assert.equal(answers.length, 2);
  assert.deepEqual(answers[1].raw, answers[0].raw);
  assert.equal(calls('server:now'), before + 1);
});

test('a duplicate while the action runs gets an empty ACK; the separate response is not retransmitted once ACKed', async () => {
  const before = calls('test:slow');
  const { datagram, messageId: mid, token } = await raw.send({ path: '/api/test/slow', query: ['ms=800'] });
  await sleep(150);
  assert.equal(raw.messages.filter((m) => m.messageId === mid).length, 0, 'nothing yet: inside the piggyback window');
  const duplicateAt = Date.now();
  await raw.sendRaw(datagram);
  const ack = await raw.waitFor((m) => m.messageId === mid, 500, { what: 'the empty ACK' });
  assert.equal(ack.type, 'ACK');
  assert.equal(ack.code, '0.00');
  assert.equal(ack.raw.length, 4, 'an empty message');
  assert.ok(ack.at - duplicateAt < 300, `empty ACK ${ack.at - duplicateAt} ms after the duplicate`);
  const response = await raw.waitFor((m) => m.type === 'CON' && m.token?.equals(token), 2000, { what: 'the separate response' });
  assert.equal(response.code, '2.05');
  assert.notEqual(response.messageId, mid, 'a separate response has its own message ID');
  await raw.ack(response.messageId);
  const copies = await raw.collect((m) => m.messageId === response.messageId && m.type === 'CON', 1000);
  assert.equal(copies.length, 1, 'not retransmitted after our ACK');
  assert.equal(calls('test:slow'), before + 1);
  // A third copy of the request, after all that: the empty ACK again, and still one execution.
  await raw.sendRaw(datagram);
  await sleep(200);
  assert.equal(raw.messages.filter((m) => m.messageId === mid && m.type === 'ACK' && m.code === '0.00').length, 2);
  assert.equal(raw.messages.filter((m) => m.token?.equals(token) && m.code === '2.05').length, 1);
  assert.equal(calls('test:slow'), before + 1);
});
