'use strict';
// A fuzzer of our own (issue 9): 100,000 datagrams mutated from valid requests (bit flips,
// truncation, random option deltas and lengths, oversized token lengths, stray payload markers,
// repeated options) from 64 endpoints on 8 loopback addresses. The plugin must not throw (the
// test process would fail on an uncaught exception), its stores stay within their configured
// bounds, nothing in it faults (handlerErrors, tickErrors), and a normal request is still answered.
// The seed is fixed so that a failure can be replayed; FUZZ_SEED picks another.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const dgram = require('node:dgram');
const { FAST, bootWithRawClient, json } = require('./coap-helpers');
const { random, mutate } = require('../support/fuzzer');
const { sleep } = require('../support/util');

const DATAGRAMS = 100_000;
const LIMITS = {
  deduplication: { maxEntries: 5000, maxBytes: 1024 * 1024, lifetimeMs: 60_000 },
  blockwise: { maxEntries: 200, maxBytes: 256 * 1024, lifetimeMs: 60_000 },
  maxConnections: 500,
};

let double;
let port;
let raw;
let stop;
before(async () => ({ double, port, raw, stop } = await bootWithRawClient({ coap: { ...FAST, ...LIMITS } })));
after(() => stop?.());

test(`${DATAGRAMS.toLocaleString('en')} mutated datagrams from 64 endpoints: nothing throws, stores stay bounded, service goes on`, async () => {
  const next = random(Number(process.env.FUZZ_SEED ?? 0xc0a9));
  const sockets = [];
  for (let i = 0; i < 64; i++) {
    const socket = dgram.createSocket('udp4');
    socket.on('message', () => {}); // answers are read and dropped
    await new Promise((resolve) => socket.bind(0, `127.0.0.${2 + (i % 8)}`, resolve));
    sockets.push(socket);
  }
  try {
    const received = () => double.protocol.stats().transport.received;
    const start = received();
    for (let sent = 0; sent < DATAGRAMS; sent += 100) {
      await Promise.all(Array.from({ length: 100 }, () => new Promise((resolve) => {
        sockets[next(sockets.length)].send(mutate(next), port, '127.0.0.1', resolve);
      })));
      // The server shares this process: let it read what was sent, so that the kernel's receive
      // buffer is not what drops the datagrams (bounded: a wait of at most about a second per burst).
      for (let spins = 0; received() - start < sent && spins < 1000; spins++) await new Promise((resolve) => setImmediate(resolve));
    }
    await sleep(1500); // the tick's sweeps, retransmissions and give-ups
  } finally {
    for (const socket of sockets) socket.close();
  }
  const stats = double.protocol.stats();
  const t = stats.transport;
  assert.ok(t.received >= DATAGRAMS * 0.9, `the plugin received ${t.received} of ${DATAGRAMS} datagrams`);
  assert.ok(t.malformed > 1000, `many were malformed (${t.malformed})`);
  assert.equal(t.handlerErrors, 0, 'no request reached a bug of ours');
  assert.equal(t.receiveErrors, 0, 'no datagram reached a bug of ours');
  assert.equal(t.tickErrors, 0);
  assert.ok(t.deduplication.entries <= LIMITS.deduplication.maxEntries && t.deduplication.bytes <= LIMITS.deduplication.maxBytes, JSON.stringify(t.deduplication));
  assert.ok(t.uploads.bytes + t.storedBodies.bytes <= 2 * LIMITS.blockwise.maxBytes, JSON.stringify([t.uploads, t.storedBodies]));
  assert.ok(stats.connections <= LIMITS.maxConnections, `connections ${stats.connections}`);

  const response = await raw.request({ path: '/api/server/now', accept: 50 });
  assert.equal(response.code, '2.05');
  assert.equal(typeof json(response).result.now, 'number');
});
