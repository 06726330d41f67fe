'use strict';
// The peer table (src/coap/peer.ts) and Echo values (src/coap/echo.ts): per-peer message IDs that
// never reuse an ID in flight, eviction that spares verified and busy peers, and Echo values that
// only verify the address they were issued for.
const test = require('node:test');
const assert = require('node:assert/strict');
const { Peers } = require('../../dist/coap/peer');
const { EchoValues, ECHO_LENGTH } = require('../../dist/coap/echo');

const at = (address, port) => ({ address, port, family: 'IPv4', key: `${address}|${port}`, security: null });
const source = (i) => at(`10.0.${i >> 8 & 255}.${i & 255}`, 5683);

test('a peer allocates consecutive message IDs and skips those of its CONs in flight', () => {
  const peers = new Peers(10, () => {});
  const peer = peers.heard(at('a', 1), 0);
  const first = peer.allocateMessageId();
  peer.flying((first + 1) & 0xffff);
  peer.flying((first + 2) & 0xffff);
  assert.equal(peer.allocateMessageId(), (first + 3) & 0xffff);
  for (let i = 0; i < 0x10000; i++) peer.flying(i);
  assert.throws(() => peer.allocateMessageId(), /in flight/);
});

test('a full table drops an idle unverified peer before a verified one, and never a busy one', () => {
  const dropped = [];
  const peers = new Peers(3, (peer) => dropped.push(peer.key));
  const device = peers.heard(source(0), 0);
  peers.verify(device);
  assert.equal(peers.stats.verified, 1);
  const busy = peers.heard(source(1), 1);
  busy.flying(7);
  peers.heard(source(2), 2);
  for (let i = 3; i < 1000; i++) peers.heard(source(i), i);
  assert.equal(peers.size, 3);
  assert.equal(peers.get(device.key), device, 'the verified device stays');
  assert.equal(peers.get(busy.key), busy, 'the peer with a CON in flight stays');
  assert.equal(dropped.length, 997);
  assert.equal(peers.stats.evicted, 997);
  // With only verified and busy peers left besides, an idle verified one goes before refusing to keep.
  const spare = peers.heard(source(5000), 5000);
  peers.verify(spare);
  assert.ok(peers.get(spare.key) === spare);
  assert.equal(peers.stats.verified, 2, 'verified peers are counted as they come and go');
  peers.drop(spare);
  assert.equal(peers.stats.verified, 1);
});

test('peers that hold nothing are swept after the idle time; busy ones stay', () => {
  const peers = new Peers(10, () => {});
  const idle = peers.heard(at('a', 1), 0);
  const busy = peers.heard(at('b', 1), 0);
  busy.flying(1);
  peers.sweep(500, 1000);
  assert.equal(peers.size, 2);
  peers.sweep(1001, 1000);
  assert.equal(peers.get(idle.key), undefined);
  assert.equal(peers.get(busy.key), busy);
});

test('an Echo value verifies the IP address it was issued to, while fresh, and says whether an answer was withheld', async () => {
  const echo = new EchoValues(60_000);
  const alice = { address: '127.0.0.1', port: 4000, family: 'IPv4', key: '127.0.0.1|4000' };
  const otherPort = { address: '127.0.0.1', port: 4001, family: 'IPv4', key: '127.0.0.1|4001' };
  const mallory = { address: '127.0.0.2', port: 4000, family: 'IPv4', key: '127.0.0.2|4000' };
  const plain = echo.issue(alice, false);
  const withheld = echo.issue(alice, true);
  assert.equal(plain.length, ECHO_LENGTH);
  assert.deepEqual(echo.check(plain, alice), { valid: true, withheld: false });
  assert.deepEqual(echo.check(withheld, alice), { valid: true, withheld: true });
  assert.equal(echo.check(plain, mallory).valid, false, 'another address');
  assert.equal(echo.check(plain, otherPort).valid, true, 'the same address from another port (the host received it)');
  const forged = Buffer.from(withheld);
  forged[4] ^= 1; // flip the withheld flag: the MAC covers it
  assert.equal(echo.check(forged, alice).valid, false);
  assert.equal(echo.check(plain.subarray(0, 10), alice).valid, false);
  assert.equal(new EchoValues(60_000).check(plain, alice).valid, false, 'another server secret');
  const future = Buffer.from(plain);
  future.writeUInt32BE(future.readUInt32BE(0) + 100);
  assert.equal(echo.check(future, alice).valid, false, 'issued in the future (and its MAC no longer matches)');
  const shortLived = new EchoValues(1000);
  const soon = shortLived.issue(alice, false);
  assert.equal(shortLived.check(soon, alice).valid, true);
  await new Promise((resolve) => setTimeout(resolve, 2100));
  assert.equal(shortLived.check(soon, alice).valid, false, 'older than its lifetime');
});

test('echoScope "endpoint" (behind a proxy, one address is many devices): a value verifies its address and port only', () => {
  const echo = new EchoValues(60_000, 'endpoint');
  const device = { address: '10.0.0.253', port: 40000, family: 'IPv4', key: '10.0.0.253|40000' };
  const neighbour = { address: '10.0.0.253', port: 40001, family: 'IPv4', key: '10.0.0.253|40001' };
  const value = echo.issue(device, false);
  assert.deepEqual(echo.check(value, device), { valid: true, withheld: false });
  assert.equal(echo.check(value, neighbour).valid, false, 'another device behind the same proxy address');
  assert.equal(echo.check(echo.issue(neighbour, true), neighbour).valid, true);
});
