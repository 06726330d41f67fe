'use strict';
/**
 * Notifications on the wire (RFC 7641 §3.2-3.4, §4.5), seen by a raw observer: the registration
 * answer carries Observe, notifications carry the registration's token and strictly increasing
 * Observe values, and they are NON but for one CON every `observe.conEvery` (from a random phase).
 */
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { decode } = require('cbor-x');
const { bootDouble, rawObserver } = require('./coap-helpers');
const { option, readUint } = require('../support/raw');
const { sleep, waitUntil } = require('../support/util');

const SUBSCRIBE = 'api/realtime/subscribe';

describe('observe notifications (conEvery: 3)', () => {
  let double;
  let port;
  before(async () => ({ double, port } = await bootDouble({ coap: { observe: { conEvery: 3 } } })));
  after(() => double?.stop());

  it('the registration answer is a 2.05 with Observe and {roomId, channel}', async () => {
    const peer = await rawObserver(port);
    try {
      const { token, response } = await peer.observe(SUBSCRIBE, ['index=i', 'collection=registration']);
      assert.equal(response.code, '2.05');
      assert.ok(response.ack, 'answer piggybacked on the ACK of the CON registration');
      assert.deepEqual(response.token, token);
      assert.notEqual(response.observe, undefined, 'no Observe option on the registration answer');
      assert.equal(readUint(option(response, 'Content-Format')), 50);
      const roomId = double.roomIdOf('i', 'registration');
      assert.deepEqual(response.body.result, { roomId, channel: double.rooms.get(roomId).channel });
      assert.equal(double.subscribers(roomId), 1);
      assert.equal(double.protocol.stats().realtime.subscriptions, 1);

      const answer = await peer.deregister(token, SUBSCRIBE, ['index=i', 'collection=registration']);
      assert.equal(answer.code, '2.05');
      assert.equal(answer.observe, undefined, 'a deregistration answer has no Observe');
    } finally {
      await peer.close();
    }
  });

  it('notifications: same token, strictly increasing Observe, NON with a CON every 3rd', async () => {
    const peer = await rawObserver(port);
    try {
      const query = ['index=i', 'collection=sequence'];
      const { token, response } = await peer.observe(SUBSCRIBE, query);
      assert.equal(response.code, '2.05');
      // Nine publications at once: the CON ones hold the others back until ACKed (flow control).
      for (let n = 1; n <= 9; n++) assert.equal(double.publish('i', 'sequence', { n }).length, 1);
      const notifications = await peer.nextNotifications(token, 9, 3000);
      assert.equal(notifications.length, 9);
      assert.deepEqual(notifications.map((m) => m.body.result._source.n), [1, 2, 3, 4, 5, 6, 7, 8, 9]);
      let previous = response.observe;
      for (const m of notifications) {
        assert.deepEqual(m.token, token);
        assert.equal(m.code, '2.05');
        assert.ok(m.observe > previous, `Observe ${m.observe} does not follow ${previous}`);
        previous = m.observe;
      }
      // One CON in every three, from a phase each relation draws at random (so a channel's relations spread their CONs).
      const cons = notifications.flatMap((m, i) => (m.confirmable ? [i] : []));
      assert.equal(cons.length, 3, `CONs at ${cons}`);
      assert.ok(cons[0] < 3 && cons[1] === cons[0] + 3 && cons[2] === cons[0] + 6, `CONs at ${cons}`);
      // Nothing more than what was published; all CONs acknowledged, nothing retransmitted.
      assert.ok(await waitUntil(() => double.protocol.stats().transport.retransmitting === 0, 1000));
      assert.equal(peer.retransmissions.size, 0);
      assert.equal(peer.notifications(token).length, 9);
      await peer.deregister(token, SUBSCRIBE, query);
      assert.equal(double.subscribers(double.roomIdOf('i', 'sequence')), 0);
    } finally {
      await peer.close();
    }
  });

  it('without Accept, the answer and notifications are CBOR (Content-Format 60)', async () => {
    const peer = await rawObserver(port);
    try {
      const query = ['index=i', 'collection=cbor'];
      const { token, response } = await peer.observe(SUBSCRIBE, query, { accept: null });
      assert.equal(response.code, '2.05');
      assert.equal(readUint(option(response, 'Content-Format')), 60);
      assert.equal(decode(response.payload).result.roomId, double.roomIdOf('i', 'cbor'));
      double.publish('i', 'cbor', { temperature: 20.5, on: true });
      const [notification] = await peer.nextNotifications(token, 1);
      assert.equal(readUint(option(notification, 'Content-Format')), 60);
      assert.deepEqual(decode(notification.payload).result._source, { temperature: 20.5, on: true });
      await peer.deregister(token, SUBSCRIBE, query);
    } finally {
      await peer.close();
    }
  });

  it('a retransmitted registration (same message ID) registers once', async () => {
    const peer = await rawObserver(port);
    try {
      const token = Buffer.from('d00d');
      const query = ['index=i', 'collection=duplicate'];
      // A CON GET with Observe: 0 and message ID 4242, then the same datagram again.
      const { datagram } = await peer.send({ method: 'GET', confirmable: true, messageId: 4242, token, path: SUBSCRIBE, query, observe: 0, accept: 50 });
      await peer.sendRaw(datagram);
      assert.ok(await waitUntil(() => peer.messages.filter((m) => m.ack && m.messageId === 4242).length === 2, 2000),
        'each copy is answered');
      const answers = peer.messages.filter((m) => m.ack && m.messageId === 4242);
      assert.deepEqual(answers[1].payload, answers[0].payload, 'the duplicate gets the same answer');
      assert.equal(double.protocol.stats().transport.observe.relations, 1);
      assert.equal(double.protocol.stats().realtime.subscriptions, 1);
      double.publish('i', 'duplicate', { n: 1 });
      await sleep(150);
      assert.equal(peer.notifications(token).filter((m) => !m.ack).length, 1);
      await peer.deregister(token, SUBSCRIBE, query);
      assert.equal(double.protocol.stats().transport.observe.relations, 0);
    } finally {
      await peer.close();
    }
  });

  it('two relations of one device keep their own tokens and sequences', async () => {
    const peer = await rawObserver(port);
    try {
      const query = ['index=i', 'collection=pair'];
      const a = await peer.observe(SUBSCRIBE, query);
      const b = await peer.observe(SUBSCRIBE, query);
      const roomId = double.roomIdOf('i', 'pair');
      assert.equal(double.subscribers(roomId), 1, 'one Kuzzle subscription per connection and room');
      assert.equal(double.protocol.stats().realtime.subscriptions, 2);
      double.publish('i', 'pair', { n: 1 });
      double.publish('i', 'pair', { n: 2 });
      for (const { token, response } of [a, b]) {
        const notifications = await peer.nextNotifications(token, 2, 2000);
        assert.deepEqual(notifications.map((m) => m.body.result._source.n), [1, 2]);
        assert.ok(notifications[0].observe > response.observe && notifications[1].observe > notifications[0].observe);
      }
      // Ending one keeps Kuzzle's subscription for the other.
      await peer.deregister(a.token, SUBSCRIBE, query);
      assert.equal(double.subscribers(roomId), 1);
      double.publish('i', 'pair', { n: 3 });
      assert.equal((await peer.nextNotifications(b.token, 3, 2000)).length, 3);
      assert.equal(peer.notifications(a.token).length, 2);
      await peer.deregister(b.token, SUBSCRIBE, query);
      assert.ok(await waitUntil(() => double.subscribers(roomId) === 0, 1000));
      assert.equal(double.protocol.stats().realtime.subscriptions, 0);
    } finally {
      await peer.close();
    }
  });
});
