'use strict';
// Reading DTLS records in clear before OpenSSL does (src/dtls/records.ts): ClientHello detection
// and the PSK identity of a ClientKeyExchange. Datagrams are built by hand from RFC 6347 §4.1
// and RFC 4279 §2; random and truncated input never throws.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const { isClientHello, startsInClear, pskIdentityOf, decodeIdentity } = require('../../dist/dtls/records');

/** One DTLS 1.2 record: content type, epoch, sequence number 0, then the fragment. */
function record(type, epoch, fragment) {
  const header = Buffer.alloc(13);
  header[0] = type;
  header.writeUInt16BE(0xfefd, 1);
  header.writeUInt16BE(epoch, 3);
  header.writeUInt16BE(fragment.length, 11);
  return Buffer.concat([header, fragment]);
}

/** One handshake message in one fragment. */
function handshake(msgType, body, { fragmentOffset = 0 } = {}) {
  const header = Buffer.alloc(12);
  header[0] = msgType;
  header.writeUIntBE(body.length, 1, 3);
  header.writeUIntBE(fragmentOffset, 6, 3);
  header.writeUIntBE(body.length, 9, 3);
  return Buffer.concat([header, body]);
}

function clientKeyExchange(identity) {
  const bytes = Buffer.from(identity);
  const body = Buffer.alloc(2 + bytes.length);
  body.writeUInt16BE(bytes.length, 0);
  bytes.copy(body, 2);
  return record(22, 0, handshake(16, body));
}

test('a ClientHello of epoch 0 opens a handshake; the same bytes in epoch 1, or another message, do not', () => {
  const hello = record(22, 0, handshake(1, crypto.randomBytes(60)));
  assert.equal(isClientHello(hello), true);
  assert.equal(startsInClear(hello), true);
  assert.equal(isClientHello(record(22, 1, handshake(1, crypto.randomBytes(60)))), false);
  assert.equal(isClientHello(record(23, 0, handshake(1, crypto.randomBytes(60)))), false);
  assert.equal(isClientHello(clientKeyExchange('x')), false);
  assert.equal(startsInClear(clientKeyExchange('x')), true);
  assert.equal(startsInClear(record(23, 1, crypto.randomBytes(40))), false, 'application data is not in clear');
});

test('the PSK identity of a ClientKeyExchange, first record or after others in the datagram', () => {
  assert.equal(pskIdentityOf(clientKeyExchange('sensor-1')), 'sensor-1');
  const flight = Buffer.concat([clientKeyExchange('été-7'), record(20, 0, Buffer.from([1])), record(22, 1, crypto.randomBytes(40))]);
  assert.equal(pskIdentityOf(flight), 'été-7');
  const afterCertificate = Buffer.concat([record(22, 0, handshake(11, Buffer.alloc(3))), clientKeyExchange('cert-then-psk')]);
  assert.equal(pskIdentityOf(afterCertificate), 'cert-then-psk');
});

test('no identity from what is not a whole first fragment of a ClientKeyExchange with a sane length', () => {
  const good = clientKeyExchange('sensor-1');
  for (let cut = 0; cut < good.length; cut++) assert.equal(pskIdentityOf(good.subarray(0, cut)), null, `cut at ${cut}`);
  const lying = Buffer.from(good);
  lying.writeUInt16BE(200, 25); // identity length beyond the record
  assert.equal(pskIdentityOf(lying), null);
  assert.equal(pskIdentityOf(record(22, 0, handshake(16, Buffer.concat([Buffer.from([0, 8]), Buffer.from('sensor-1')]), { fragmentOffset: 4 }))), null);
  assert.equal(pskIdentityOf(clientKeyExchange('x'.repeat(257))), null, 'longer than OpenSSL takes');
  assert.equal(pskIdentityOf(record(22, 1, handshake(16, Buffer.from([0, 1, 65])))), null, 'encrypted epoch');
  assert.equal(pskIdentityOf(record(22, 0, handshake(16, Buffer.from([0, 2, 0xc3, 0x28])))), null, 'not UTF-8');
  assert.equal(decodeIdentity(Buffer.from([0xff])), null);
  assert.equal(decodeIdentity(Buffer.from('ok')), 'ok');
});

test('fuzz: 20,000 random and mutated datagrams never throw', () => {
  const seeds = [clientKeyExchange('sensor-1'), record(22, 0, handshake(1, crypto.randomBytes(60)))];
  for (let i = 0; i < 20000; i++) {
    let datagram;
    if (i % 2 === 0) datagram = crypto.randomBytes(crypto.randomInt(0, 80));
    else {
      datagram = Buffer.from(seeds[i % 4 === 1 ? 0 : 1]);
      for (let flips = crypto.randomInt(1, 4); flips > 0; flips--) datagram[crypto.randomInt(datagram.length)] = crypto.randomInt(256);
    }
    const identity = pskIdentityOf(datagram);
    assert.ok(identity === null || typeof identity === 'string');
    assert.equal(typeof isClientHello(datagram), 'boolean');
  }
});
