'use strict';
// Request body limits and Block1 ordering (maxRequestSize: 4096): 4.13 with Size1, 4.08 on gaps.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { bootWithRawClient, coap, logOption, json } = require('./coap-helpers');
const { option, readUint, readBlock } = require('../support/raw');
const { tmpFile } = require('../support/util');

const CAP = 4096;
let double;
let port;
let raw;
let stop;
before(async () => ({ double, port, raw, stop } = await bootWithRawClient({ coap: { maxRequestSize: CAP } })));
after(() => stop?.());

const echoes = () => double.calls.get('test:echo') ?? 0;
const PATH = '/api/test/echo';
const block = (num, more, fill = 0x61) => ({ block1: { num, more, szx: 6 }, payload: Buffer.alloc(1024, fill), contentFormat: 50 });

function assertTooLarge(response) {
  assert.equal(response.code, '4.13');
  assert.equal(readUint(option(response, 'Size1')), CAP);
  const body = json(response);
  assert.equal(body.error.id, 'network.coap.request_too_large');
  assert.equal(body.status, 413);
}

test('coap-client uploading 20 KB (it announces Size1) is refused with 4.13 and Size1 4096', async () => {
  const before = echoes();
  const run = await coap(port, PATH, ['-m', 'post', '-t', '50', '-b', '1024', '-f', tmpFile(Buffer.alloc(20 * 1024, 0x62))]);
  assert.equal(run.last.code, '4.13');
  assert.equal(logOption(run.last, 'Size1'), String(CAP));
  assert.equal(echoes(), before);
});

test('a single 5000-byte datagram is refused with 4.13 and Size1', async () => {
  assertTooLarge(await raw.request({ path: PATH, accept: 50, contentFormat: 50, payload: Buffer.alloc(5000, 0x20) }));
});

test('Block1 with Size1 over the cap is refused at block 0', async () => {
  assertTooLarge(await raw.request({ path: PATH, accept: 50, ...block(0, true), size1: 5000 }));
});

test('Block1 without Size1: blocks up to the cap get 2.31, the one past it 4.13; nothing runs', async () => {
  const before = echoes();
  for (let num = 0; num < 4; num++) {
    const response = await raw.request({ path: PATH, accept: 50, ...block(num, true) });
    assert.equal(response.code, '2.31', `block ${num}`);
    assert.deepEqual(readBlock(option(response, 'Block1')), { num, more: true, szx: 6, size: 1024 });
  }
  assertTooLarge(await raw.request({ path: PATH, accept: 50, ...block(4, true) }));
  assert.equal(echoes(), before);
});

test('a Block1 upload that starts at block 2 is 4.08 (Request Entity Incomplete)', async () => {
  const response = await raw.request({ path: PATH, accept: 50, ...block(2, false) });
  assert.equal(response.code, '4.08');
  assert.equal(json(response).error.id, 'network.coap.block_incomplete');
});

test('a missing Block1 block (0, then 2) is 4.08; the upload can then restart and complete', async () => {
  const before = echoes();
  assert.equal((await raw.request({ path: PATH, accept: 50, ...block(0, true) })).code, '2.31');
  const gap = await raw.request({ path: PATH, accept: 50, ...block(2, false) });
  assert.equal(gap.code, '4.08');
  assert.equal(json(gap).error.id, 'network.coap.block_incomplete');
  // The failed upload is forgotten: block 1 alone is now out of order too.
  assert.equal((await raw.request({ path: PATH, accept: 50, ...block(1, false) })).code, '4.08');
  const text = JSON.stringify({ pad: 'x'.repeat(600) }); // two 512-byte blocks, a one-block answer
  const body = Buffer.from(text);
  assert.equal((await raw.request({ path: PATH, query: ['envelope=compact'], accept: 50, contentFormat: 50,
    block1: { num: 0, more: true, szx: 5 }, payload: body.subarray(0, 512) })).code, '2.31');
  const last = await raw.request({ path: PATH, query: ['envelope=compact'], accept: 50, contentFormat: 50,
    block1: { num: 1, more: false, szx: 5 }, payload: body.subarray(512) });
  assert.equal(last.code, '2.05');
  assert.deepEqual(json(last).body, JSON.parse(text));
  assert.equal(echoes(), before + 1);
});
