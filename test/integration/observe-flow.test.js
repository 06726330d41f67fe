'use strict';
/**
 * Flow control and dead observers (RFC 7641 §4.5), with CON notifications and short
 * retransmission: an observer that never acknowledges is dropped after its retransmissions (and
 * Kuzzle's subscription with it) while others keep receiving; behind a CON in flight at most
 * `observe.queueLength` notifications wait, the oldest being dropped and counted.
 */
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { bootDouble, rawObserver } = require('./coap-helpers');
const { sleep, waitUntil } = require('../support/util');

const SUBSCRIBE = 'api/realtime/subscribe';
const QUEUE_LENGTH = 2;

describe('observe flow control (notificationType: con, ackTimeoutMs: 100, maxRetransmit: 1, queueLength: 2)', () => {
  let double;
  let port;
  before(async () => ({ double, port } = await bootDouble({
    coap: {
      observe: { notificationType: 'con', queueLength: QUEUE_LENGTH },
      retransmission: { ackTimeoutMs: 100, ackRandomFactor: 1.5, maxRetransmit: 1 },
    },
  })));
  after(() => double?.stop());

  const unsubscribeCalls = () => double.calls.get('realtime:unsubscribe') ?? 0;
  const observeStats = () => double.protocol.stats().transport.observe;

  it('(d) CON notifications never acknowledged: after the retransmissions every relation of the device ends', async () => {
    const peer = await rawObserver(port, { onCon: 'ignore' });
    try {
      const first = await peer.observe(SUBSCRIBE, ['index=i', 'collection=unacked']);
      const second = await peer.observe(SUBSCRIBE, ['index=i', 'collection=unacked-too']);
      assert.equal(first.response.code, '2.05');
      assert.equal(second.response.code, '2.05');
      const rooms = [double.roomIdOf('i', 'unacked'), double.roomIdOf('i', 'unacked-too')];
      assert.deepEqual(rooms.map((roomId) => double.subscribers(roomId)), [1, 1]);
      const calls = unsubscribeCalls();
      double.publish('i', 'unacked', { n: 1 });
      const [notification] = await peer.nextNotifications(first.token, 1);
      assert.equal(notification.confirmable, true);
      // ~100-150 ms, one retransmission, ~200-300 ms more, then the device is given up.
      assert.ok(await waitUntil(() => rooms.every((roomId) => double.subscribers(roomId) === 0), 3000),
        'the relations outlived their unacknowledged notification');
      assert.equal(peer.retransmissions.get(notification.messageId), 1, 'maxRetransmit: 1 → sent twice');
      assert.equal(unsubscribeCalls(), calls + 2);
      assert.equal(double.protocol.stats().realtime.subscriptions, 0);
      assert.equal(observeStats().relations, 0);
      assert.deepEqual(double.publish('i', 'unacked', { n: 2 }), []);
      await sleep(100);
      assert.equal(peer.notifications(first.token).length, 1);
      assert.equal(peer.notifications(second.token).length, 0);
    } finally {
      await peer.close();
    }
  });

  it('a slow observer is dropped while the others keep receiving promptly', async () => {
    const query = ['index=i', 'collection=mixed'];
    const fast = await Promise.all(Array.from({ length: 5 }, () => rawObserver(port)));
    const slow = await rawObserver(port, { onCon: 'ignore' });
    try {
      const fastTokens = [];
      for (const peer of fast) fastTokens.push((await peer.observe(SUBSCRIBE, query)).token);
      const slowRelation = await slow.observe(SUBSCRIBE, query);
      const roomId = double.roomIdOf('i', 'mixed');
      assert.equal(double.subscribers(roomId), 6);
      const publishedAt = [];
      for (let n = 0; n < 12; n++) {
        publishedAt.push(Date.now());
        double.publish('i', 'mixed', { n });
        await sleep(50);
      }
      assert.ok(await waitUntil(() => fast.every((peer, i) => peer.notifications(fastTokens[i]).length >= 12), 2000));
      for (const [i, peer] of fast.entries()) {
        const notifications = peer.notifications(fastTokens[i]);
        assert.deepEqual(notifications.map((m) => m.body.result._source.n), [...Array(12).keys()]);
        for (const [n, m] of notifications.entries()) {
          assert.ok(m.at - publishedAt[n] < 300, `fast observer ${i} got notification ${n} after ${m.at - publishedAt[n]} ms`);
        }
      }
      // The slow one got the first CON (and its retransmission) only, and is gone with its subscription.
      assert.equal(double.subscribers(roomId), 5);
      const slowNotifications = slow.notifications(slowRelation.token);
      assert.equal(slowNotifications.length, 1);
      assert.equal(slow.retransmissions.get(slowNotifications[0].messageId), 1);
      assert.equal(double.protocol.stats().realtime.subscriptions, 5);
      for (const [i, peer] of fast.entries()) await peer.deregister(fastTokens[i], SUBSCRIBE, query);
      assert.ok(await waitUntil(() => double.subscribers(roomId) === 0, 1000));
    } finally {
      await Promise.all([...fast, slow].map((peer) => peer.close()));
    }
  });

  it('behind a CON in flight the queue keeps the newest queueLength notifications; stats count the dropped', async () => {
    const peer = await rawObserver(port, { onCon: 'ignore' });
    try {
      const query = ['index=i', 'collection=queue'];
      const { token } = await peer.observe(SUBSCRIBE, query);
      const dropped = observeStats().dropped;
      for (let n = 1; n <= 6; n++) double.publish('i', 'queue', { n });
      // #1 is in flight, #2..#6 wait in a queue of 2: #2, #3, #4 are dropped.
      assert.equal(observeStats().dropped - dropped, 6 - 1 - QUEUE_LENGTH);
      assert.equal(observeStats().queued, QUEUE_LENGTH);
      const [first] = await peer.nextNotifications(token, 1);
      peer.onCon = 'ack';
      await peer.ack(first.messageId);
      const notifications = await peer.nextNotifications(token, 3);
      assert.deepEqual(notifications.map((m) => m.body.result._source.n), [1, 5, 6]);
      assert.equal(observeStats().queued, 0);
      await sleep(100);
      assert.equal(peer.notifications(token).length, 3);
      await peer.deregister(token, SUBSCRIBE, query);
      assert.equal(double.subscribers(double.roomIdOf('i', 'queue')), 0);
      // Operators hear of drops at info level, within the transport's one-second sweep.
      const total = observeStats().dropped;
      const reported = () => double.logs.some((l) => l.level === 'info' && l.message.includes(`dropped by full per-device queues (${total} in all`));
      assert.ok(await waitUntil(reported, 3000), 'an info log reports the drops');
    } finally {
      await peer.close();
    }
  });

  it('a final notification waiting behind a CON is not pushed out of the queue by other relations', async () => {
    // RFC 7641 §3.2/§4.2: a relation that Kuzzle ends must end with a final non-2.xx notification.
    const peer = await rawObserver(port, { onCon: 'ignore' });
    let b;
    try {
      const a = await peer.observe(SUBSCRIBE, ['index=i', 'collection=evict-a']);
      b = await peer.observe(SUBSCRIBE, ['index=i', 'collection=evict-b']);
      double.publish('i', 'evict-a', { n: 1 });
      const [inFlight] = await peer.nextNotifications(a.token, 1);
      // Kuzzle ends relation a while its CON is in flight: its final notification waits in the queue...
      const left = await peer.request({ method: 'POST', path: 'api/realtime/unsubscribe', payload: { roomId: double.roomIdOf('i', 'evict-a') } });
      assert.equal(left.code, '2.05');
      // ...then relation b's notifications fill the queue.
      double.publish('i', 'evict-b', { n: 1 });
      double.publish('i', 'evict-b', { n: 2 });
      peer.onCon = 'ack';
      await peer.ack(inFlight.messageId);
      const finals = await peer.nextNotifications(a.token, 2, 1500);
      assert.equal(finals.length, 2, 'relation a ended without its final notification: the device still believes it observes');
      assert.equal(finals[1].code, '4.04');
      assert.equal(finals[1].observe, undefined);
    } finally {
      if (b) await peer.deregister(b.token, SUBSCRIBE, ['index=i', 'collection=evict-b']).catch(() => {});
      await peer.close();
    }
  });

  it('a full queue behind an unacknowledged CON: counted as dropped, then cleared when the device is given up', async () => {
    const peer = await rawObserver(port, { onCon: 'ignore' });
    try {
      const { token } = await peer.observe(SUBSCRIBE, ['index=i', 'collection=stalled']);
      const roomId = double.roomIdOf('i', 'stalled');
      const dropped = observeStats().dropped;
      for (let n = 1; n <= 5; n++) double.publish('i', 'stalled', { n });
      assert.equal(observeStats().dropped - dropped, 5 - 1 - QUEUE_LENGTH);
      assert.ok(await waitUntil(() => double.subscribers(roomId) === 0, 3000));
      assert.equal(observeStats().queued, 0);
      assert.equal(observeStats().relations, 0);
      assert.deepEqual(peer.notifications(token).map((m) => m.body.result._source.n), [1]);
    } finally {
      await peer.close();
    }
  });
});
