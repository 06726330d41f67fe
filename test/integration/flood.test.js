'use strict';
/**
 * A flood of 100,000 spoofed endpoints (issue 9, item 4): requests from as many 127.64.x.y
 * sources, sent on a raw socket (test/support/spoof.js), against bounds small enough that the
 * flood overflows every table (1,000 connections, 2,000 deduplication entries of which a quarter
 * for unverified peers, 1,500 peers). Real devices, verified before the flood, keep everything:
 * a retransmitted CON gets its cached answer and does not run again, their connections stay, and a
 * new device is served, not refused.
 */
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const packet = require('coap-packet');
const { bootDouble, rawObserver } = require('./coap-helpers');
const { uriOptions } = require('../support/raw');
const { sendSpoofed } = require('../support/spoof');
const { waitUntil } = require('../support/util');

const SPOOFED = 100_000;
const CHUNK = 10_000;
const RATE = 5_000; // datagrams a second: the double and the plugin keep up even on a busy machine, so the kernel drops few
const LIMITS = {
  maxConnections: 1000,
  deduplication: { maxEntries: 2000, maxBytes: '2mb', unverifiedShare: 0.25 },
};

let double;
let port;
before(async () => ({ double, port } = await bootDouble({ coap: LIMITS })));
after(() => double?.stop());

const stats = () => double.protocol.stats();
const calls = (action) => double.calls.get(action) ?? 0;

function spoofedRequest(i) {
  const bytes = packet.generate({ confirmable: true, code: '0.02', messageId: i & 0xffff, token: Buffer.from([i >> 16, i >> 8 & 255, i & 255]), options: uriOptions('/api/server/now') });
  return { from: `127.64.${i >> 8 & 255}.${i & 255}`, fromPort: 10_000 + (i >> 16), to: '127.0.0.1', toPort: port, bytes };
}

test(`${SPOOFED.toLocaleString('en')} spoofed endpoints: real devices keep their answers and connections; a new device is served`, async () => {
  const device = await rawObserver(port); // verified by its first exchange
  try {
    // A CON document-like write, answered: its answer is cached for EXCHANGE_LIFETIME.
    const write = await device.send({ method: 'POST', path: '/api/test/echo', payload: { reading: 21.5 }, messageId: 0x4242 });
    const answer = await device.waitFor((m) => m.messageId === 0x4242 && m.ack);
    assert.equal(answer.code, '2.05');
    const writes = calls('test:echo');
    const deviceConnections = stats().connections;

    let sent = 0;
    for (let start = 0; start < SPOOFED; start += CHUNK) {
      const chunk = [];
      for (let i = start; i < Math.min(SPOOFED, start + CHUNK); i++) chunk.push(spoofedRequest(i));
      sent += await sendSpoofed(chunk, { perSecond: RATE });
      await waitUntil(() => stats().transport.received >= sent * 0.95, 2_000, 20);
    }
    const after = stats();
    assert.equal(sent, SPOOFED);
    // The flood must really reach the plugin (what the kernel drops is not the plugin's doing).
    assert.ok(after.transport.received >= SPOOFED * 0.9, `the plugin read ${after.transport.received} datagrams`);
    assert.ok(calls('server:now') >= SPOOFED * 0.85, `${calls('server:now')} spoofed requests ran`);

    // Bounds held.
    assert.ok(after.connections <= LIMITS.maxConnections, `${after.connections} connections`);
    assert.ok(after.connectionsEvicted >= SPOOFED * 0.8, 'spoofed connections made room for each other');
    const dedup = after.transport.deduplication;
    assert.ok(dedup.entries <= LIMITS.deduplication.maxEntries, `${dedup.entries} deduplication entries`);
    assert.ok(dedup.bytes <= 2 * 1024 * 1024, `${dedup.bytes} deduplication bytes`);
    assert.ok(dedup.unverifiedEntries <= 500, `${dedup.unverifiedEntries} unverified entries`);
    assert.ok(after.transport.peers.peers <= LIMITS.maxConnections, `${after.transport.peers.peers} peers`);
    assert.ok(deviceConnections <= after.connections);

    // The device's retransmission of its write: the cached answer, byte for byte, and no second run.
    await device.sendRaw(write.datagram);
    const copies = await device.collect((m) => m.messageId === 0x4242 && m.ack, 300);
    assert.equal(copies.length, 2);
    assert.deepEqual(copies[1].raw, copies[0].raw);
    assert.equal(calls('test:echo'), writes, 'the write ran once');
    assert.equal((await device.request({ method: 'POST', path: '/api/server/now' })).code, '2.05', 'the device is still served');

    // A new device, after the flood filled every table, is served and not refused.
    const newcomer = await rawObserver(port);
    try {
      const first = await newcomer.requestWithEcho({ method: 'POST', path: '/api/server/info' });
      assert.equal(first.response.code, '2.05');
    } finally {
      await newcomer.close();
    }
  } finally {
    await device.close();
  }
});
