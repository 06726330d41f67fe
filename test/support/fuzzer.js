'use strict';
/**
 * The fuzzer of the tests and of the bench: datagrams mutated from valid requests (bit flips,
 * truncation, random option deltas and lengths, token lengths 13 to 15, stray payload markers,
 * repeated options, fresh message IDs), from a reproducible stream of numbers.
 */
const packet = require('coap-packet');
const { uriOptions, uint, blockValue } = require('./raw');

/** xorshift32: a reproducible stream of numbers below n, from a seed. */
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

/** One mutated datagram; `next(n)` is a stream of numbers below n (random()). */
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

module.exports = { random, mutate };
