'use strict';
/**
 * Block-wise notifications (RFC 7959 §2.6) with `blockSize: 64`: a notification larger than a
 * block carries its first block with Block2 and ETag; the device GETs the following blocks of the
 * same URI without Observe. coap-client-notls reassembles them by itself.
 */
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { bootDouble, rawObserver } = require('./coap-helpers');
const { coapClient, splitJson } = require('../support/peers');
const { option, readBlock } = require('../support/raw');
const { waitUntil } = require('../support/util');

const SUBSCRIBE = 'api/realtime/subscribe';
const BIG = { text: 'ä-0123456789'.repeat(80), list: Array.from({ length: 20 }, (_, i) => i) }; // ~1.1 KB

describe('block-wise notifications (blockSize: 64)', () => {
  let double;
  let port;
  before(async () => ({ double, port } = await bootDouble({ coap: { blockSize: 64 } })));
  after(() => double?.stop());

  /**
   * The rest of a block-wise body whose block 0 is `first`: GETs of blocks 1.. (of `szx`, default
   * the first block's) on the same URI, without Observe. Returns {body (Buffer), blocks}.
   */
  async function fetchRest(peer, first, query, szx) {
    const block0 = readBlock(option(first, 'Block2'));
    const etag = option(first, 'ETag');
    szx ??= block0.szx;
    const size = 1 << (szx + 4);
    const parts = [first.payload];
    const blocks = [first];
    let received = first.payload.length;
    let more = block0.more;
    while (more) {
      assert.equal(received % size, 0);
      const num = received / size;
      const answer = await peer.request({ path: SUBSCRIBE, query, block2: { num, szx } });
      assert.equal(answer.code, '2.05', `block ${num}: ${answer.payload}`);
      assert.equal(answer.observe, undefined, 'a block request is no registration');
      assert.deepEqual(option(answer, 'ETag'), etag, `block ${num} has another ETag`);
      const block = readBlock(option(answer, 'Block2'));
      assert.equal(block.num, num);
      assert.equal(block.szx, szx);
      parts.push(answer.payload);
      blocks.push(answer);
      received += answer.payload.length;
      more = block.more;
      assert.ok(blocks.length < 100, 'too many blocks');
    }
    return { body: Buffer.concat(parts), blocks };
  }

  it('a notification larger than a block: Block2 (num 0, more) and ETag, the rest by GET Block2 1..', async () => {
    const peer = await rawObserver(port);
    const query = ['index=i', 'collection=big', 'envelope=compact'];
    try {
      const { token, response } = await peer.observe(SUBSCRIBE, query);
      assert.equal(response.code, '2.05');
      assert.equal(option(response, 'Block2'), undefined, 'the compact registration answer fits one block');
      double.publish('i', 'big', BIG);
      const [first] = await peer.nextNotifications(token, 1);
      assert.ok(first, 'no notification');
      assert.equal(first.code, '2.05');
      assert.ok(first.observe > response.observe);
      const block = readBlock(option(first, 'Block2'));
      assert.deepEqual({ num: block.num, more: block.more, size: block.size }, { num: 0, more: true, size: 64 });
      assert.equal(first.payload.length, 64);
      assert.ok(option(first, 'ETag')?.length > 0, 'no ETag on a block-wise notification');
      const { body, blocks } = await fetchRest(peer, first, query);
      assert.ok(blocks.length > 10);
      const notification = JSON.parse(body.toString('utf8'));
      assert.deepEqual(Object.keys(notification).sort(), ['action', 'event', 'result', 'scope', 'type']);
      assert.deepEqual(notification.result._source, BIG);

      // The relation goes on; the next notification is another body with another ETag.
      double.publish('i', 'big', { ...BIG, list: [] });
      const second = (await peer.nextNotifications(token, 2))[1];
      assert.ok(second, 'no second notification');
      assert.ok(second.observe > first.observe);
      assert.notDeepEqual(option(second, 'ETag'), option(first, 'ETag'));
      const rest = await fetchRest(peer, second, query);
      assert.deepEqual(JSON.parse(rest.body.toString('utf8')).result._source, { ...BIG, list: [] });
      await peer.deregister(token, SUBSCRIBE, query);
    } finally {
      await peer.close();
    }
  });

  it('the device may ask the following blocks in a smaller size (RFC 7959 §2.4)', async () => {
    const peer = await rawObserver(port);
    const query = ['index=i', 'collection=smaller', 'envelope=compact'];
    try {
      const { token } = await peer.observe(SUBSCRIBE, query);
      double.publish('i', 'smaller', BIG);
      const [first] = await peer.nextNotifications(token, 1);
      assert.ok(first, 'no notification');
      const { body } = await fetchRest(peer, first, query, 1); // 32-byte blocks from byte 64 on
      assert.deepEqual(JSON.parse(body.toString('utf8')).result._source, BIG);
      await peer.deregister(token, SUBSCRIBE, query);
    } finally {
      await peer.close();
    }
  });

  it('a registration answer larger than a block carries Observe and Block2; its rest comes the same way', async () => {
    const peer = await rawObserver(port);
    const query = ['index=i', 'collection=big-answer'];
    try {
      const { token, response } = await peer.observe(SUBSCRIBE, query);
      assert.equal(response.code, '2.05');
      assert.notEqual(response.observe, undefined);
      const block = readBlock(option(response, 'Block2'));
      assert.equal(block.num, 0);
      assert.equal(block.more, true);
      const { body } = await fetchRest(peer, response, query);
      const answer = JSON.parse(body.toString('utf8'));
      const roomId = double.roomIdOf('i', 'big-answer');
      assert.deepEqual(answer.result, { roomId, channel: double.rooms.get(roomId).channel });
      double.publish('i', 'big-answer', { small: 1 });
      const [notification] = await peer.nextNotifications(token, 1);
      assert.ok(notification, 'the relation did not survive the block requests');
      await peer.deregister(token, SUBSCRIBE, query);
    } finally {
      await peer.close();
    }
  });

  it('coap-client-notls -s reassembles a block-wise notification', async () => {
    // Compact: the registration answer fits one block, so no notification can overtake its transfer.
    const uri = `coap://127.0.0.1:${port}/${SUBSCRIBE}?index=i&collection=client-big&envelope=compact`;
    const done = coapClient(['-s', '3', '-A', '50', '-m', 'get', uri], { timeoutMs: 10000 });
    let roomId;
    assert.ok(await waitUntil(() => (roomId = double.roomIdOf('i', 'client-big')) !== undefined && double.subscribers(roomId) === 1, 3000));
    double.publish('i', 'client-big', BIG);
    const { exit, stdout, stderr } = await done;
    assert.equal(exit, 0, stderr);
    const values = splitJson(stdout.toString('utf8'));
    assert.equal(values.length, 2, stdout.toString());
    assert.equal(values[0].roomId, roomId);
    assert.deepEqual(values[1].result._source, BIG);
  });
});
