'use strict';
// Message deduplication (RFC 7252 §4.5): a retransmitted CON runs once and gets the same answer.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { bootDouble, rawClient, sleep } = require('./coap-helpers');

let double;
let port;
let raw;
before(async () => {
  ({ double, port } = await bootDouble({
    coap: { piggybackWindowMs: 1500, retransmission: { ackTimeoutMs: 200, ackRandomFactor: 1, maxRetransmit: 2 } },
  }));
  raw = await rawClient(port);
});
after(async () => {
  await raw?.close();
  await double?.stop();
});

const calls = (action) => double.calls.get(action) ?? 0;

test('the same CON datagram twice: one execution, two byte-identical piggybacked answers', async () => {
  const before = calls('server:now');
  const { datagram, mid } = await raw.send({ path: '/api/server/now' });
  const first = await raw.waitFor((m) => m.mid === mid && m.type === 'ACK');
  assert.equal(first.code, '2.05');
  await sleep(30); // a later, distinct Date.now() would show a second execution
  await raw.sendRaw(datagram);
  await raw.waitFor((m) => m.mid === mid && m !== first);
  const answers = raw.inbox.filter((m) => m.mid === mid);
  assert.equal(answers.length, 2);
  assert.deepEqual(answers[1].raw, answers[0].raw);
  assert.equal(calls('server:now'), before + 1);
});

test('a duplicate while the action runs gets an empty ACK; the separate response is not retransmitted once ACKed', async () => {
  const before = calls('test:slow');
  const { datagram, mid, token } = await raw.send({ path: '/api/test/slow', query: ['ms=800'] });
  await sleep(150);
  assert.equal(raw.inbox.filter((m) => m.mid === mid).length, 0, 'nothing yet: inside the piggyback window');
  const duplicateAt = Date.now();
  await raw.sendRaw(datagram);
  const ack = await raw.waitFor((m) => m.mid === mid, 500, 'the empty ACK');
  assert.equal(ack.type, 'ACK');
  assert.equal(ack.code, '0.00');
  assert.equal(ack.raw.length, 4, 'an empty message');
  assert.ok(ack.at - duplicateAt < 300, `empty ACK ${ack.at - duplicateAt} ms after the duplicate`);
  const response = await raw.waitFor((m) => m.type === 'CON' && m.token?.equals(token), 2000, 'the separate response');
  assert.equal(response.code, '2.05');
  assert.notEqual(response.mid, mid, 'a separate response has its own message ID');
  await raw.ack(response.mid);
  const copies = await raw.collect((m) => m.mid === response.mid && m.type === 'CON', 1000);
  assert.equal(copies.length, 1, 'not retransmitted after our ACK');
  assert.equal(calls('test:slow'), before + 1);
  // A third copy of the request, after all that: the empty ACK again, and still one execution.
  await raw.sendRaw(datagram);
  await sleep(200);
  assert.equal(raw.inbox.filter((m) => m.mid === mid && m.type === 'ACK' && m.code === '0.00').length, 2);
  assert.equal(raw.inbox.filter((m) => m.token?.equals(token) && m.code === '2.05').length, 1);
  assert.equal(calls('test:slow'), before + 1);
});
