'use strict';
/**
 * Fan-out: 1000 relations (100 devices × 10 tokens) on one room; a publication reaches each
 * relation exactly once, with strictly increasing Observe values.
 */
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { bootDouble, rawObserver } = require('./coap-helpers');
const { waitUntil } = require('../support/util');

const DEVICES = 100;
const TOKENS = 10;
const QUERY = ['index=i', 'collection=fanout'];

describe('observe fan-out: 100 devices × 10 relations', () => {
  let double;
  let port;
  const peers = [];
  const relations = []; // {peer, token, response}
  before(async () => {
    ({ double, port } = await bootDouble());
    for (let i = 0; i < DEVICES; i++) peers.push(await rawObserver(port));
    // One registration per device at a time: bursts of 100 datagrams, not 1000.
    for (let t = 0; t < TOKENS; t++) {
      const round = await Promise.all(peers.map(async (peer) => ({ peer, ...(await peer.observe('api/realtime/subscribe', QUERY)) })));
      relations.push(...round);
    }
  });
  after(async () => {
    await Promise.all(peers.map((peer) => peer.close()));
    await double.stop();
  });

  it('registers 1000 relations, one Kuzzle subscription per device', () => {
    assert.equal(relations.length, DEVICES * TOKENS);
    assert.ok(relations.every(({ response }) => response.code === '2.05' && response.observe !== undefined));
    const roomId = double.roomIdOf('i', 'fanout');
    assert.equal(double.subscribers(roomId), DEVICES);
    const stats = double.protocol.stats();
    assert.equal(stats.connections, DEVICES);
    assert.equal(stats.realtime.subscriptions, DEVICES * TOKENS);
    assert.equal(stats.transport.observe.relations, DEVICES * TOKENS);
  });

  it('each publication reaches every relation exactly once', async () => {
    for (let n = 1; n <= 2; n++) {
      assert.equal(double.publish('i', 'fanout', { n }).length, 1);
      const arrived = await waitUntil(() => relations.every(({ peer, token }) => peer.notifications(token).length >= n), 5000);
      const missing = relations.filter(({ peer, token }) => peer.notifications(token).length < n).length;
      assert.ok(arrived, `${missing} relations missed publication ${n}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
    for (const { peer, token, response } of relations) {
      const notifications = peer.notifications(token);
      assert.deepEqual(notifications.map((m) => m.body.result._source.n), [1, 2]);
      assert.ok(notifications.every((m) => m.token.equals(token)));
      assert.ok(response.observe < notifications[0].observe && notifications[0].observe < notifications[1].observe);
    }
    assert.equal(double.protocol.stats().transport.observe.dropped, 0);
  });
});
