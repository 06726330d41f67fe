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
const packet = require('coap-packet');
const { FAST, bootWithRawClient, json } = require('./coap-helpers');
const { uriOptions, uint, blockValue } = require('../support/raw');
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

/** xorshift32: a reproducible stream of numbers. */
function random(seed) {
  let x = seed >>> 0 || 1;
  return (n) => {
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    return x % n;
  };
}

const SEEDS = [
  packet.generate({ confirmable: true, code: '0.02', messageId: 1, token: Buffer.from('a1b2'), options: uriOptions('/api/server/now') }),
  packet.generate({ confirmable: true, code: '0.02', messageId: 2, token: Buffer.from('c3'), options: [...uriOptions('/api/test/echo', ['a=1']), { name: 'Content-Format', value: uint(50) }], payload: Buffer.from('{"x":1}') }),
  packet.generate({ confirmable: true, code: '0.01', messageId: 3, token: Buffer.from('0102030405060708', 'hex'), options: [{ name: 'Observe', value: Buffer.alloc(0) }, ...uriOptions('/api/realtime/subscribe', ['index=i', 'collection=c'])] }),
  packet.generate({ confirmable: true, code: '0.02', messageId: 4, token: Buffer.from('b1'), options: [...uriOptions('/api/test/echo'), { name: 'Block1', value: blockValue(0, true, 0) }], payload: Buffer.alloc(16, 0x41) }),
  packet.generate({ confirmable: false, code: '0.01', messageId: 5, token: Buffer.from('d4'), options: [...uriOptions('/.well-known/core'), { name: 'Block2', value: blockValue(1, false, 0) }] }),
  packet.generate({ confirmable: true, code: '0.05', messageId: 6, token: Buffer.from('e5'), options: [...uriOptions('/api/server/info'), { name: 'Block2', value: blockValue(2, false, 2) }, { name: 'Size2', value: Buffer.alloc(0) }] }),
];

function mutate(next) {
  const bytes = Buffer.from(SEEDS[next(SEEDS.length)]);
  let out = bytes;
  const rounds = 1 + next(4);
  for (let i = 0; i < rounds; i++) {
    switch (next(7)) {
      case 0: out[next(out.length)] ^= 1 << next(8); break; // bit flip
      case 1: out = out.subarray(0, next(out.length + 1)); break; // truncation
      case 2: if (out.length > 4) out[4 + next(out.length - 4)] = next(256); break; // a random option delta/length byte
      case 3: if (out.length > 0) out[0] = (out[0] & 0xf0) | (13 + next(3)); break; // token length 13, 14 or 15
      case 4: out = Buffer.concat([out, Buffer.from([0xff]), Buffer.alloc(next(3) * next(700), next(256))]); break; // payload markers
      case 5: { // an option repeated, or an extended delta
        const at = 4 + (out[0] & 0x0f);
        if (at < out.length) out = Buffer.concat([out.subarray(0, at), Buffer.from([next(256), next(256), next(256)]), out.subarray(at)]);
        break;
      }
      default: if (out.length >= 4) out.writeUInt16BE(next(0x10000), 2); // a fresh message ID: a new exchange, not a duplicate
    }
    if (out.length === 0) break;
  }
  return out;
}

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
  assert.equal(t.tickErrors, 0);
  assert.ok(t.deduplication.entries <= LIMITS.deduplication.maxEntries && t.deduplication.bytes <= LIMITS.deduplication.maxBytes, JSON.stringify(t.deduplication));
  assert.ok(t.uploads.bytes + t.storedBodies.bytes <= 2 * LIMITS.blockwise.maxBytes, JSON.stringify([t.uploads, t.storedBodies]));
  assert.ok(stats.connections <= LIMITS.maxConnections, `connections ${stats.connections}`);

  const response = await raw.request({ path: '/api/server/now', accept: 50 });
  assert.equal(response.code, '2.05');
  assert.equal(typeof json(response).result.now, 'number');
});
