'use strict';
const { test } = require('node:test');
const assert = require('node:assert/strict');
const { BoundedStore } = require('../../dist/coap/boundedStore');
const { Deduplicator } = require('../../dist/coap/deduplication');

test('BoundedStore evicts the oldest entries first when the count bound is reached', () => {
  const store = new BoundedStore({ maxEntries: 3, maxBytes: 1e6, lifetimeMs: 1000 });
  for (const key of ['a', 'b', 'c', 'd']) store.set(key, key, 1, 0);
  assert.equal(store.size, 3);
  assert.equal(store.get('a', 0), undefined);
  assert.equal(store.get('d', 0), 'd');
  assert.equal(store.evicted, 1);
});

test('BoundedStore keeps its byte bound, counting updates', () => {
  const store = new BoundedStore({ maxEntries: 100, maxBytes: 100, lifetimeMs: 1000 });
  store.set('a', 1, 40, 0);
  store.set('b', 2, 40, 0);
  assert.equal(store.bytes, 80);
  store.update('b', 3, 50);
  assert.equal(store.bytes, 90);
  store.set('c', 4, 30, 0); // 120 > 100: 'a' goes
  assert.equal(store.get('a', 0), undefined);
  assert.equal(store.bytes, 80);
  assert.ok(store.bytes <= 100);
});

test('BoundedStore expires entries after their lifetime; update keeps the age, set renews it', () => {
  const store = new BoundedStore({ maxEntries: 10, maxBytes: 1e6, lifetimeMs: 100 });
  store.set('a', 1, 1, 0);
  store.set('b', 2, 1, 50);
  store.update('a', 9, 1);
  assert.equal(store.get('a', 99), 9);
  assert.equal(store.get('a', 100), undefined);
  store.set('b', 3, 1, 120);
  store.sweep(160);
  assert.equal(store.size, 1);
  assert.equal(store.get('b', 219), 3);
  store.sweep(220);
  assert.equal(store.size, 0);
  assert.equal(store.bytes, 0);
});

test('Deduplicator: new, then in progress, then the recorded answer', () => {
  const dedup = new Deduplicator({ maxEntries: 10, maxBytes: 1e6, unverifiedShare: 0.5 }, 1000);
  for (const verified of [true, false]) {
    const key = `ep${verified}#1`;
    assert.equal(dedup.check(key, verified, 0).state, 'new');
    assert.equal(dedup.check(key, verified, 1).state, 'in-progress');
    dedup.answered(key, Buffer.from('answer'));
    const seen = dedup.check(key, !verified, 2); // found whichever store holds it
    assert.equal(seen.state, 'answered');
    assert.equal(seen.answer.toString(), 'answer');
    assert.equal(dedup.check(key, verified, 1000).state, 'new'); // EXCHANGE_LIFETIME over: a new exchange
  }
  assert.equal(dedup.check('ep#2', true, 2).state, 'new');
});

test('Deduplicator: a flood of unverified peers never evicts the entries of verified ones', () => {
  const dedup = new Deduplicator({ maxEntries: 1000, maxBytes: 1e9, unverifiedShare: 0.25 }, 247000);
  for (let i = 0; i < 100; i++) {
    dedup.check(`device|1#${i}`, true, 0);
    dedup.answered(`device|1#${i}`, Buffer.from(`answer ${i}`));
  }
  for (let i = 0; i < 50000; i++) dedup.check(`10.${i >> 8 & 255}.${i & 255}.1|9#${i}`, false, 1);
  for (let i = 0; i < 100; i++) assert.equal(dedup.check(`device|1#${i}`, true, 2).state, 'answered', `device entry ${i}`);
  const { entries, unverifiedEntries, unverifiedEvicted } = dedup.stats;
  assert.equal(unverifiedEntries, 250);
  assert.equal(entries, 350);
  assert.equal(unverifiedEvicted, 50000 - 250);
});

test('Deduplicator stays within its bounds under a flood of distinct messages', () => {
  const dedup = new Deduplicator({ maxEntries: 1000, maxBytes: 64 * 1024, unverifiedShare: 0.25 }, 247000);
  const answer = Buffer.alloc(100);
  for (let i = 0; i < 20000; i++) {
    const key = `10.0.0.${i % 250}|${5000 + (i % 7)}#${i}`;
    dedup.check(key, i % 2 === 0, i);
    dedup.answered(key, answer);
  }
  const { entries, bytes, evicted } = dedup.stats;
  assert.ok(entries <= 1000, `entries ${entries}`);
  assert.ok(bytes <= 64 * 1024, `bytes ${bytes}`);
  assert.ok(evicted >= 19000);
  // the most recent ones are still deduplicated
  assert.equal(dedup.check(`10.0.0.${19999 % 250}|${5000 + (19999 % 7)}#19999`, false, 20000).state, 'answered');
  assert.equal(dedup.check(`10.0.0.${19998 % 250}|${5000 + (19998 % 7)}#19998`, true, 20000).state, 'answered');
});

test('BoundedStore: entries replaced or deleted out of order do not keep the queue growing', () => {
  const store = new BoundedStore({ maxEntries: 10, maxBytes: 1e9, lifetimeMs: 1e9 });
  for (let i = 0; i < 100000; i++) {
    store.set(`k${i % 5}`, i, 1, 0); // replaced over and over
    store.set(`d${i}`, i, 1, 0);
    store.delete(`d${i}`); // deleted at once
  }
  assert.equal(store.size, 5);
  assert.ok(store.queue.length - store.head <= 2 * store.size + 1025, `queue ${store.queue.length - store.head}`);
  // age order survives: the oldest of the five goes first
  for (let i = 0; i < 10; i++) store.set(`n${i}`, i, 1, 0);
  assert.equal(store.size, 10);
  assert.equal(store.get('k0', 0), undefined);
  assert.equal(store.get('n9', 0), 9);
});
