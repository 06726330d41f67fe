'use strict';
/**
 * The two-step form: POST /api/realtime/subscribe joins a channel, then GET /channels/<channel>
 * with Observe: 0 observes it. Only channels the device itself joined can be observed.
 */
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { bootDouble, rawObserver } = require('./coap-helpers');
const { sleep, waitUntil } = require('../support/util');

describe('observe /channels/<channel> after POST /api/realtime/subscribe', () => {
  let double;
  let port;
  before(async () => ({ double, port } = await bootDouble()));
  after(() => double?.stop());

  /** POST-subscribes a device on index i / collection; resolves {roomId, channel}. */
  async function postSubscribe(peer, collection) {
    const answer = await peer.request({ method: 'POST', path: 'api/realtime/subscribe', query: ['index=i', `collection=${collection}`] });
    assert.equal(answer.code, '2.05');
    assert.equal(answer.observe, undefined, 'a POST answer is no registration');
    return answer.body.result;
  }

  it('POST subscribe, then GET /channels/<channel> with Observe: 0 → 2.05 with Observe, notifications arrive', async () => {
    const peer = await rawObserver(port);
    try {
      const { roomId, channel } = await postSubscribe(peer, 'two-step');
      assert.equal(double.subscribers(roomId), 1);
      const { token, response } = await peer.observe(`channels/${channel}`);
      assert.equal(response.code, '2.05');
      assert.notEqual(response.observe, undefined);
      assert.deepEqual(response.body.result, { roomId, channel });
      assert.equal(double.protocol.stats().realtime.subscriptions, 1);
      double.publish('i', 'two-step', { n: 1 });
      double.publish('i', 'two-step', { n: 2 });
      const notifications = await peer.nextNotifications(token, 2);
      assert.deepEqual(notifications.map((m) => m.body.result._source.n), [1, 2]);
      assert.ok(notifications.every((m) => m.body.room === channel && m.observe > response.observe));
      // Deregistering ends Kuzzle's subscription too.
      const answer = await peer.deregister(token, `channels/${channel}`);
      assert.equal(answer.observe, undefined);
      assert.ok(await waitUntil(() => double.subscribers(roomId) === 0, 2000));
      assert.equal(double.protocol.stats().realtime.subscriptions, 0);
    } finally {
      await peer.close();
    }
  });

  it('GET /channels/unknown-channel → 4.04 without Observe', async () => {
    const peer = await rawObserver(port);
    try {
      const { response } = await peer.observe('channels/unknown-channel');
      assert.equal(response.code, '4.04');
      assert.equal(response.observe, undefined);
      assert.equal(response.body.error.id, 'network.coap.channel_not_found');
      assert.equal(double.protocol.stats().transport.observe.relations, 0);
    } finally {
      await peer.close();
    }
  });

  it('a channel another device joined cannot be observed (4.04); without Observe it is 4.05', async () => {
    const owner = await rawObserver(port);
    const other = await rawObserver(port);
    try {
      const { roomId, channel } = await postSubscribe(owner, 'not-mine');
      const { response } = await other.observe(`channels/${channel}`);
      assert.equal(response.code, '4.04');
      const plain = await owner.request({ path: `channels/${channel}` });
      assert.equal(plain.code, '4.05');
      await owner.request({ method: 'POST', path: 'api/realtime/unsubscribe', payload: { roomId } });
      assert.equal(double.subscribers(roomId), 0);
    } finally {
      await owner.close();
      await other.close();
    }
  });

  it('a device can still observe its channel after another device left the same room', async () => {
    const a = await rawObserver(port);
    const b = await rawObserver(port);
    try {
      const first = await postSubscribe(a, 'shared');
      const second = await postSubscribe(b, 'shared');
      assert.deepEqual(second, first, 'same filters, same room and channel');
      assert.equal(double.subscribers(first.roomId), 2);
      // Device a leaves the room; device b is still subscribed in Kuzzle.
      const left = await a.request({ method: 'POST', path: 'api/realtime/unsubscribe', payload: { roomId: first.roomId } });
      assert.equal(left.code, '2.05');
      assert.equal(double.subscribers(first.roomId), 1);
      const { token, response } = await b.observe(`channels/${second.channel}`);
      assert.equal(response.code, '2.05', `device b could not observe its channel: ${JSON.stringify(response.body)}`);
      double.publish('i', 'shared', { n: 1 });
      assert.equal((await b.nextNotifications(token, 1)).length, 1);
      await b.deregister(token, `channels/${second.channel}`);
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('a device can still observe its channel after another device\'s relation on the same room ended', async () => {
    const a = await rawObserver(port);
    const b = await rawObserver(port);
    try {
      const query = ['index=i', 'collection=shared-relation'];
      const relation = await a.observe('api/realtime/subscribe', query);
      assert.equal(relation.response.code, '2.05');
      const { roomId, channel } = await postSubscribe(b, 'shared-relation');
      assert.equal(double.subscribers(roomId), 2);
      await a.deregister(relation.token, 'api/realtime/subscribe', query);
      assert.ok(await waitUntil(() => double.subscribers(roomId) === 1, 1000));
      await sleep(20);
      const { token, response } = await b.observe(`channels/${channel}`);
      assert.equal(response.code, '2.05', `device b could not observe its channel: ${JSON.stringify(response.body)}`);
      await b.deregister(token, `channels/${channel}`);
    } finally {
      await a.close();
      await b.close();
    }
  });
});
