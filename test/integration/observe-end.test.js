'use strict';
/**
 * Every way a relation ends, from the device's side (deregistration, RST to a NON or a CON
 * notification) or from Kuzzle's (unsubscribe, disconnect, expired token): Kuzzle's subscription
 * ends with it, the plugin forgets it, and no notification follows. The double drops a removed
 * connection's subscriptions as Kuzzle does. (CON notifications never acknowledged: observe-flow.)
 */
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startDouble } = require('../support/hostDouble');
const { rawObserver } = require('./coap-helpers');
const { sleep, waitUntil } = require('../support/util');

const SUBSCRIBE = 'api/realtime/subscribe';

describe('ending observe relations (conEvery: 2)', () => {
  let double;
  let port;
  before(async () => {
    double = startDouble({ coap: { observe: { conEvery: 2 } } });
    double.dropSubscriptionsOnRemove();
    port = await double.start();
  });
  after(() => double.stop());

  const unsubscribeCalls = () => double.calls.get('realtime:unsubscribe') ?? 0;

  /** A fresh device observing index i / `collection`; resolves {peer, token, query, roomId, connectionId}. */
  async function observer(collection, options) {
    const peer = await rawObserver(port, options);
    const query = ['index=i', `collection=${collection}`];
    const { token, response } = await peer.observe(SUBSCRIBE, query);
    assert.equal(response.code, '2.05');
    assert.notEqual(response.observe, undefined);
    const roomId = double.roomIdOf('i', collection);
    assert.equal(double.subscribers(roomId), 1);
    const [connectionId] = double.rooms.get(roomId).connections;
    assert.ok(double.connections.has(connectionId));
    return { peer, token, query, roomId, connectionId, collection };
  }

  /** Kuzzle's subscription and the plugin's relation are gone, and a publication reaches nobody. */
  async function assertEnded({ peer, token, roomId, collection }) {
    assert.ok(await waitUntil(() => double.subscribers(roomId) === 0, 2000), 'Kuzzle subscription still there');
    const stats = double.protocol.stats();
    assert.equal(stats.realtime.subscriptions, 0);
    assert.equal(stats.transport.observe.relations, 0);
    const before = peer.notifications(token).length;
    assert.deepEqual(double.publish('i', collection, { after: 'end' }), []);
    await sleep(150);
    assert.equal(peer.notifications(token).length, before, 'a notification arrived after the end');
  }

  it('(a) a GET with Observe: 1 and the same token deregisters', async () => {
    const o = await observer('dereg');
    try {
      const calls = unsubscribeCalls();
      const answer = await o.peer.deregister(o.token, SUBSCRIBE, o.query);
      assert.equal(answer.code, '2.05');
      assert.equal(answer.observe, undefined);
      await assertEnded(o);
      assert.equal(unsubscribeCalls(), calls + 1);
    } finally {
      await o.peer.close();
    }
  });

  it('(b) an RST answering a NON notification', async () => {
    const o = await observer('rst-non');
    try {
      const calls = unsubscribeCalls();
      // One notification in two is a CON (from a random phase): publish until a NON comes.
      double.publish('i', 'rst-non', { n: 1 });
      let notifications = await o.peer.nextNotifications(o.token, 1);
      if (notifications[0].confirmable) {
        double.publish('i', 'rst-non', { n: 2 });
        notifications = await o.peer.nextNotifications(o.token, 2);
      }
      const notification = notifications.at(-1);
      assert.equal(notification.confirmable, false, 'one of two notifications is a NON');
      await o.peer.reset(notification.messageId);
      await assertEnded(o);
      assert.equal(unsubscribeCalls(), calls + 1);
    } finally {
      await o.peer.close();
    }
  });

  it('(c) an RST answering a CON notification', async () => {
    const o = await observer('rst-con', { onCon: 'ignore' });
    try {
      const calls = unsubscribeCalls();
      // One notification in two is a CON (from a random phase): publish until one comes.
      double.publish('i', 'rst-con', { n: 1 });
      let notifications = await o.peer.nextNotifications(o.token, 1);
      if (!notifications[0].confirmable) {
        double.publish('i', 'rst-con', { n: 2 });
        notifications = await o.peer.nextNotifications(o.token, 2);
      }
      const con = notifications.at(-1);
      assert.equal(con.confirmable, true, 'one of two notifications is a CON');
      await o.peer.reset(con.messageId);
      await assertEnded(o);
      assert.equal(unsubscribeCalls(), calls + 1);
      assert.equal(double.protocol.stats().transport.retransmitting, 0);
    } finally {
      await o.peer.close();
    }
  });

  it('(e) POST /api/realtime/unsubscribe: a final non-2.xx notification without Observe, then nothing', async () => {
    const o = await observer('unsubscribe');
    try {
      const answer = await o.peer.request({ method: 'POST', path: 'api/realtime/unsubscribe', payload: { roomId: o.roomId } });
      assert.equal(answer.code, '2.05');
      assert.equal(answer.body.result.roomId, o.roomId);
      const [final] = await o.peer.nextNotifications(o.token, 1);
      assert.ok(final, 'no final notification');
      assert.equal(final.code, '4.04');
      assert.equal(final.observe, undefined, 'a final notification has no Observe option');
      assert.equal(final.body.error.id, 'network.coap.subscription_ended');
      assert.equal(final.body.room, double.rooms.get(o.roomId).channel);
      await assertEnded(o);
      assert.equal(o.peer.notifications(o.token).length, 1);
    } finally {
      await o.peer.close();
    }
  });

  it('(f) protocol.disconnect(connectionId): final 5.03, connection removed, subscription dropped', async () => {
    const o = await observer('disconnect');
    try {
      const calls = unsubscribeCalls();
      double.protocol.disconnect(o.connectionId);
      const [final] = await o.peer.nextNotifications(o.token, 1);
      assert.ok(final, 'no final notification');
      assert.equal(final.code, '5.03');
      assert.equal(final.observe, undefined);
      assert.equal(final.body.error.id, 'network.coap.disconnected');
      assert.ok(!double.connections.has(o.connectionId));
      assert.ok(double.removed.includes(o.connectionId));
      await assertEnded(o);
      // Kuzzle drops a removed connection's subscriptions itself: no unsubscribe on a dead connection.
      assert.equal(unsubscribeCalls(), calls);
      assert.equal(o.peer.notifications(o.token).length, 1);
    } finally {
      await o.peer.close();
    }
  });

  it('(g) TokenExpired on kuzzle:notification:server: final 4.01 security.token.expired', async () => {
    const o = await observer('expired');
    try {
      double.expireToken(o.connectionId);
      const [final] = await o.peer.nextNotifications(o.token, 1);
      assert.ok(final, 'no final notification');
      assert.equal(final.code, '4.01');
      assert.equal(final.observe, undefined);
      assert.equal(final.body.status, 401);
      assert.equal(final.body.error.id, 'security.token.expired');
      assert.equal(final.body.error.message, 'Authentication Token Expired');
      await assertEnded(o);
      assert.equal(o.peer.notifications(o.token).length, 1);
      assert.ok(double.connections.has(o.connectionId), 'an expired token does not end the connection');
    } finally {
      await o.peer.close();
    }
  });

  it('a re-registration with the same token keeps one relation and one subscription', async () => {
    const o = await observer('reregister');
    try {
      const again = await o.peer.observe(SUBSCRIBE, o.query, { token: o.token });
      assert.equal(again.response.code, '2.05');
      assert.notEqual(again.response.observe, undefined);
      assert.equal(double.subscribers(o.roomId), 1);
      assert.equal(double.protocol.stats().transport.observe.relations, 1);
      assert.equal(double.protocol.stats().realtime.subscriptions, 1);
      double.publish('i', 'reregister', { n: 1 });
      const notifications = await o.peer.nextNotifications(o.token, 1);
      await sleep(100);
      assert.equal(o.peer.notifications(o.token).length, 1, 'notified once per publication');
      assert.ok(notifications[0].observe > again.response.observe);
      await o.peer.deregister(o.token, SUBSCRIBE, o.query);
      await assertEnded(o);
    } finally {
      await o.peer.close();
    }
  });

  it('a re-registration survives Kuzzle finishing the replaced relation\'s unsubscribe after the new subscribe', async () => {
    // Kuzzle runs requests asynchronously: here realtime:unsubscribe takes 50 ms, subscribe does not.
    const execute = double.entryPoint.execute;
    double.entryPoint.execute = function (request, callback) {
      if (request.input.controller === 'realtime' && request.input.action === 'unsubscribe') {
        setTimeout(() => execute.call(this, request, callback), 50);
      } else {
        execute.call(this, request, callback);
      }
    };
    let o;
    try {
      o = await observer('reregister-async');
      const again = await o.peer.observe(SUBSCRIBE, o.query, { token: o.token });
      assert.equal(again.response.code, '2.05');
      await sleep(150);
      assert.deepEqual(o.peer.notifications(o.token).map((m) => `${m.code} ${JSON.stringify(m.body?.error ?? null)}`), [],
        'the re-registered relation was ended');
      assert.equal(double.subscribers(o.roomId), 1, 'Kuzzle subscription lost after a re-registration');
      double.publish('i', 'reregister-async', { n: 1 });
      assert.equal((await o.peer.nextNotifications(o.token, 1, 1000)).length, 1);
    } finally {
      double.entryPoint.execute = execute;
      if (o) {
        await o.peer.deregister(o.token, SUBSCRIBE, o.query).catch(() => {});
        if (double.subscribers(o.roomId) > 0) {
          await o.peer.request({ method: 'POST', path: 'api/realtime/unsubscribe', payload: { roomId: o.roomId } }).catch(() => {});
        }
        await o.peer.close();
      }
    }
  });
});
