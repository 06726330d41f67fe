'use strict';
// Block2 (RFC 7959): a ~3 KB result (server:info) fetched block by block runs the action once per
// request, has one ETag across its blocks, Size2 when asked, and the same bytes whatever the size.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { bootWithRawClient, coap, logOption, bigResult } = require('./coap-helpers');
const { decodeWithCbor2 } = require('../support/peers');
const { option, readBlock, readUint } = require('../support/raw');

let double;
let port;
let raw;
let stop;
before(async () => ({ double, port, raw, stop } = await bootWithRawClient()));
after(() => stop?.());

const PATH = '/api/server/info';
const QUERY = ['envelope=compact']; // no requestId: the body is the same on every request
const executions = () => double.calls.get('server:info') ?? 0;

/** Fetches every block with the raw client at block size 2 ** (szx + 4); returns the blocks. */
async function fetchBlocks(szx, { size2 = false } = {}) {
  const blocks = [];
  for (let num = 0; ; num++) {
    const response = await raw.request({ path: PATH, query: QUERY, block2: { num, szx }, size2: size2 && num === 0 ? 0 : undefined });
    assert.equal(response.code, '2.05', `block ${num}`);
    const block = readBlock(option(response, 'Block2'));
    assert.equal(block.num, num);
    assert.equal(block.szx, szx);
    blocks.push(response);
    if (!block.more) return blocks;
    assert.equal(response.payload.length, block.size, `block ${num} is full`);
    assert.ok(num < 400, 'too many blocks');
  }
}

let reference; // the body fetched in 64-byte blocks

test('64-byte blocks (raw client, Block2 szx 2 + Size2): one execution, one ETag, Size2 = total', async () => {
  const before = executions();
  const blocks = await fetchBlocks(2, { size2: true });
  assert.equal(executions(), before + 1, 'server:info ran once for all the blocks');
  reference = Buffer.concat(blocks.map((b) => b.payload));
  assert.ok(blocks.length > 40, `${blocks.length} blocks`);
  const etag = option(blocks[0], 'ETag');
  assert.ok(etag && etag.length > 0, 'an ETag');
  for (const block of blocks) assert.deepEqual(option(block, 'ETag'), etag);
  assert.equal(readUint(option(blocks[0], 'Size2')), reference.length);
  assert.equal(readUint(option(blocks[0], 'Content-Format')), 60);
  assert.deepEqual(decodeWithCbor2(reference).value, bigResult());
});

test('without Size2 in the request there is no Size2 in the response; a new request gets a new ETag', async () => {
  const first = await raw.request({ path: PATH, query: QUERY, block2: { num: 0, szx: 6 } });
  const second = await raw.request({ path: PATH, query: QUERY, block2: { num: 0, szx: 6 } });
  assert.equal(option(first, 'Size2'), undefined);
  assert.ok(readBlock(option(first, 'Block2')).more);
  assert.notDeepEqual(option(first, 'ETag'), option(second, 'ETag'));
});

test('coap-client, default blocks and -b 64: the same bytes, one execution per request', async () => {
  assert.ok(reference, 'needs the 64-byte fetch');
  for (const flags of [[], ['-b', '64']]) {
    const before = executions();
    const run = await coap(port, `${PATH}?${QUERY[0]}`, ['-m', 'post', ...flags]);
    assert.equal(run.last.code, '2.05', flags.join(' '));
    const blocks = run.received.filter((m) => logOption(m, 'Block2') !== undefined && m.token !== '');
    assert.ok(blocks.length >= 3, `${blocks.length} blocks with ${flags.join(' ') || 'default blocks'}`);
    const etags = new Set(blocks.map((m) => logOption(m, 'ETag')));
    assert.equal(etags.size, 1, `one ETag: ${[...etags]}`);
    assert.deepEqual(run.payload, reference);
    assert.equal(executions(), before + 1, flags.join(' '));
  }
});

test('the full envelope in JSON, fetched by coap-client, decodes to the same result', async () => {
  const run = await coap(port, PATH, ['-m', 'post', '-A', '50']);
  assert.equal(run.last.code, '2.05');
  const body = JSON.parse(run.payload.toString('utf8'));
  assert.equal(body.status, 200);
  assert.deepEqual(body.result, bigResult());
});

test('a block past the end is 4.02, and the body it was asked of is still served afterwards', async () => {
  const first = await raw.request({ path: PATH, query: QUERY, block2: { num: 0, szx: 2 } });
  const etag = option(first, 'ETag');
  const past = await raw.request({ path: PATH, query: QUERY, block2: { num: 1000, szx: 2 }, accept: 50 });
  assert.equal(past.code, '4.02');
  const next = await raw.request({ path: PATH, query: QUERY, block2: { num: 1, szx: 2 } });
  assert.equal(next.code, '2.05', 'block 1 of the stored body after the refused block');
  assert.deepEqual(option(next, 'ETag'), etag);
  assert.deepEqual(next.payload, reference.subarray(64, 128));
});
