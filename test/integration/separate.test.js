'use strict';
// Separate responses (RFC 7252 §5.2.2) and their retransmission (§4.2), NON requests (§5.2.3).
// piggybackWindowMs 200; ackTimeoutMs 200, ackRandomFactor 1, maxRetransmit 2: a separate
// response is sent at T, T+200, T+600 and given up at T+1400.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { bootDouble, rawClient, FAST } = require('./coap-helpers');
const { option, readUint } = require('../support/raw');
const { sleep } = require('../support/util');

let double;
let port;
before(async () => ({ double, port } = await bootDouble({ coap: FAST })));
after(() => double?.stop());

async function withClient(fn) {
  const raw = await rawClient(port);
  try {
    await fn(raw);
  } finally {
    await raw.close();
  }
}

test('slow action: empty ACK after the window, then a CON response with the token, sent 1 + 2 times when never ACKed', () =>
  withClient(async (raw) => {
    const { messageId: mid, token } = await raw.send({ path: '/api/test/slow', query: ['ms=600'] });
    const sentAt = Date.now();
    const ack = await raw.waitFor((m) => m.messageId === mid, 1000, { what: 'the empty ACK' });
    assert.equal(ack.type, 'ACK');
    assert.equal(ack.code, '0.00');
    assert.ok(ack.at - sentAt >= 150 && ack.at - sentAt < 550, `ACK after ${ack.at - sentAt} ms`);
    const response = await raw.waitFor((m) => m.type === 'CON' && m.token?.equals(token), 2000, { what: 'the separate response' });
    assert.equal(response.code, '2.05');
    assert.equal(readUint(option(response, 'Content-Format')), 60);
    // Never ACKed: T, T+200, T+600, given up at T+1400. Wait well past that.
    const copies = await raw.collect((m) => m.messageId === response.messageId, 2200);
    assert.equal(copies.length, 3, `copies at ${copies.map((c) => c.at - response.at).join(', ')} ms`);
    for (const copy of copies) assert.deepEqual(copy.raw, response.raw);
    const gaps = [copies[1].at - copies[0].at, copies[2].at - copies[1].at];
    assert.ok(gaps[0] >= 150 && gaps[0] < 450, `first retransmission after ${gaps[0]} ms`);
    assert.ok(gaps[1] >= 350 && gaps[1] < 800, `second retransmission after ${gaps[1]} ms (doubled)`);
  }));

test('an RST answering the separate response stops its retransmission', () =>
  withClient(async (raw) => {
    const { token } = await raw.send({ path: '/api/test/slow', query: ['ms=300'] });
    const response = await raw.waitFor((m) => m.type === 'CON' && m.token?.equals(token), 2000, { what: 'the separate response' });
    await raw.reset(response.messageId);
    const copies = await raw.collect((m) => m.messageId === response.messageId, 1000);
    assert.equal(copies.length, 1);
  }));

test('a NON request gets a NON response with its token and no ACK, even when slow', () =>
  withClient(async (raw) => {
    const quick = await raw.request({ confirmable: false, path: '/api/server/now' });
    assert.equal(quick.type, 'NON');
    assert.equal(quick.code, '2.05');
    const slow = await raw.request({ confirmable: false, path: '/api/test/slow', query: ['ms=400'], timeoutMs: 2000 });
    assert.equal(slow.type, 'NON');
    assert.equal(slow.code, '2.05');
    await sleep(300);
    assert.equal(raw.messages.filter((m) => m.type === 'ACK').length, 0, 'nothing acknowledges a NON');
    assert.equal(raw.messages.filter((m) => m.token?.equals(slow.token)).length, 1, 'a NON response is sent once');
  }));
