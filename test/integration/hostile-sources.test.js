'use strict';
// Datagrams from sources that cannot be answered (issue 9, item 1): from UDP source port 0, sent
// on a raw socket as an attacker would (test/support/spoof.js, root). Before the fix, the RST to a
// malformed CON, and later the separate response of a slow request, made dgram.send throw
// ERR_SOCKET_BAD_PORT out of the plugin: here that would fail this test file as an uncaught exception.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const packet = require('coap-packet');
const { FAST, bootWithRawClient, json } = require('./coap-helpers');
const { uriOptions } = require('../support/raw');
const { listenAt, sendSpoofed } = require('../support/spoof');
const { sleep } = require('../support/util');

let double;
let port;
let raw;
let stop;
// Every answer is separate: the empty ACK from the tick, the response a CON retransmitted by it.
before(async () => ({ double, port, raw, stop } = await bootWithRawClient({ coap: { ...FAST, piggybackWindowMs: 0 } })));
after(() => stop?.());

const executions = () => [...double.calls.values()].reduce((a, b) => a + b, 0);
const transport = () => double.protocol.stats().transport;

function con(messageId, path, query = []) {
  return packet.generate({ confirmable: true, code: '0.02', messageId, token: Buffer.from([messageId >> 8, messageId & 0xff]), options: uriOptions(path, query) });
}

test('datagrams from source port 0 are dropped before decoding, counted, and crash nothing', async () => {
  const before = { executions: executions(), badSource: transport().badSource };
  const datagrams = [
    Buffer.from([0x4f, 0x01, 0xab, 0xcd]), // malformed CON: would be answered with an RST
    con(0x1001, '/api/server/now'),
    con(0x1002, '/api/test/slow', ['ms=300']),
    Buffer.from([0x40, 0x00, 0x10, 0x03]), // CON ping
  ];
  const sent = await sendSpoofed(datagrams.map((bytes) => ({ from: '127.0.0.1', fromPort: 0, to: '127.0.0.1', toPort: port, bytes })));
  assert.equal(sent, datagrams.length);
  // Long enough for the tick, a slow request's separate answer and a retransmission, had any run.
  await sleep(1000);
  assert.equal(transport().badSource - before.badSource, datagrams.length, 'each datagram from port 0 was counted as dropped');
  assert.equal(executions(), before.executions, 'nothing from port 0 reached Kuzzle');
  const response = await raw.request({ path: '/api/server/now', accept: 50 });
  assert.equal(response.code, '2.05');
  assert.equal(typeof json(response).result.now, 'number');
});

test('a spoofed 127.x.y.z source with a real port is an ordinary, unverified peer: its slow request runs, its answer goes as a first block that fits', async () => {
  const victim = await listenAt('127.9.8.7');
  const received = victim.messages;
  try {
    const before = executions();
    const request = con(0x2001, '/api/test/slow', ['ms=300']);
    await sendSpoofed([{ from: victim.address, fromPort: victim.port, to: '127.0.0.1', toPort: port, bytes: request }]);
    await sleep(1500); // the slow action, the separate answer and its retransmissions (FAST: 200 ms, doubling)
    assert.equal(executions(), before + 1);
    assert.ok(received.some((m) => m.ack && m.code === '0.00'), 'the empty ACK reached the spoofed address');
    const answers = received.filter((m) => m.confirmable);
    assert.ok(answers.length > 0, 'the separate answer reached the spoofed address');
    for (const answer of answers) {
      const block2 = answer.options.find((o) => o.name === 'Block2')?.value;
      assert.ok(block2 && block2[block2.length - 1] >> 4 === 0, 'as a first Block2 block');
      assert.ok(block2[block2.length - 1] & 0x08, '... of a body that goes on: the answer itself stays with the server');
    }
    assert.ok(victim.bytes <= 3 * request.length, `${victim.bytes} bytes sent for a ${request.length}-byte request, retransmissions included`);
  } finally {
    victim.close();
  }
});
