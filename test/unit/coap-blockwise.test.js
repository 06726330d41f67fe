'use strict';
const { test } = require('node:test');
const assert = require('node:assert/strict');
const { decodeBlock, encodeBlock, blockSize, szxFor, Block1Assembler, Block2Store } = require('../../dist/coap/blockwise');

const limits = { maxEntries: 10, maxBytes: 1e6, lifetimeMs: 1000 };

test('Block option values (RFC 7959 §2.2)', () => {
  assert.deepEqual(encodeBlock(0, false, 0), Buffer.alloc(0));
  assert.deepEqual(encodeBlock(0, true, 6), Buffer.from([0x0e]));
  assert.deepEqual(encodeBlock(1, true, 2), Buffer.from([0x1a]));
  assert.deepEqual(encodeBlock(300, false, 6), Buffer.from([0x12, 0xc6]));
  assert.deepEqual(decodeBlock(Buffer.from([0x12, 0xc6])), { num: 300, more: false, szx: 6 });
  assert.deepEqual(decodeBlock(Buffer.alloc(0)), { num: 0, more: false, szx: 0 });
  assert.equal(decodeBlock(Buffer.alloc(4)), null);
  assert.equal(blockSize(6), 1024);
  assert.equal(szxFor(1024), 6);
  assert.equal(szxFor(100), 2);
  assert.equal(szxFor(16), 0);
});

test('Block1Assembler reassembles blocks in order', () => {
  const assembler = new Block1Assembler(limits, () => 10000);
  const a = Buffer.alloc(64, 1);
  const b = Buffer.alloc(64, 2);
  const c = Buffer.from('end');
  assert.equal(assembler.accept('k', { num: 0, more: true, szx: 2 }, a, undefined, 0).kind, 'continue');
  assert.equal(assembler.accept('k', { num: 1, more: true, szx: 2 }, b, undefined, 1).kind, 'continue');
  const done = assembler.accept('k', { num: 2, more: false, szx: 2 }, c, undefined, 2);
  assert.equal(done.kind, 'complete');
  assert.deepEqual(done.body, Buffer.concat([a, b, c]));
  assert.equal(assembler.stats.uploads, 0);
});

test('Block1Assembler: missing, out-of-order and unknown blocks are incomplete (4.08)', () => {
  const assembler = new Block1Assembler(limits, () => 10000);
  const block = Buffer.alloc(64);
  assert.equal(assembler.accept('k', { num: 1, more: true, szx: 2 }, block, undefined, 0).kind, 'incomplete');
  assembler.accept('k', { num: 0, more: true, szx: 2 }, block, undefined, 0);
  assert.equal(assembler.accept('k', { num: 2, more: true, szx: 2 }, block, undefined, 0).kind, 'incomplete');
  // the broken upload is gone: block 1 no longer fits anything
  assert.equal(assembler.accept('k', { num: 1, more: false, szx: 2 }, block, undefined, 0).kind, 'incomplete');
});

test('Block1Assembler refuses bodies over the cap, announced by Size1 or reached', () => {
  const assembler = new Block1Assembler(limits, () => 100);
  const block = Buffer.alloc(64);
  assert.deepEqual(assembler.accept('k', { num: 0, more: true, szx: 2 }, block, 5000, 0), { kind: 'too-large', limit: 100 });
  assert.equal(assembler.accept('k', { num: 0, more: true, szx: 2 }, block, undefined, 0).kind, 'continue');
  assert.deepEqual(assembler.accept('k', { num: 1, more: true, szx: 2 }, block, undefined, 0), { kind: 'too-large', limit: 100 });
  assert.equal(assembler.stats.uploads, 0);
});

test('Block1Assembler: wrong block length, BERT, and expiry of half-done uploads', () => {
  const assembler = new Block1Assembler(limits, () => 10000);
  assert.equal(assembler.accept('k', { num: 0, more: true, szx: 2 }, Buffer.alloc(10), undefined, 0).kind, 'bad');
  assert.equal(assembler.accept('k', { num: 0, more: true, szx: 7 }, Buffer.alloc(1024), undefined, 0).kind, 'bad');
  assembler.accept('k', { num: 0, more: true, szx: 2 }, Buffer.alloc(64), undefined, 0);
  assembler.sweep(1000);
  assert.equal(assembler.stats.uploads, 0);
  assert.equal(assembler.accept('k', { num: 1, more: false, szx: 2 }, Buffer.alloc(3), undefined, 1000).kind, 'incomplete');
});

test('Block2Store keeps bodies with distinct ETags and forgets them after their lifetime', () => {
  const store = new Block2Store(limits);
  const one = store.store('a', '', 0x45, 60, Buffer.alloc(5000), 0);
  const two = store.store('b', '', 0x45, 60, Buffer.alloc(5000), 0);
  assert.equal(one.etag.length, 4);
  assert.notDeepEqual(one.etag, two.etag);
  assert.equal(store.get('a', 10), one);
  store.sweep(1000);
  assert.equal(store.get('a', 1000), undefined);
  assert.equal(store.stats.bodies, 0);
});
