'use strict';
/**
 * Pacing of NON notifications (issue 10, item 4; RFC 7641 §4.5.1): on average at most one NON
 * notification per round-trip estimate to a device: a burst of 4 goes at once, then one per round
 * trip. The estimate comes from its CON notifications (acknowledged without retransmission); a
 * device without one whose burst is spent gets a CON, which gives one.
 * The device here acknowledges CONs 60 ms late, so its round trip is about 60 ms. Notifications
 * that wait are queued (observe.queueLength), the overflow drops the oldest, counted and logged.
 */
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { FAST, bootDouble, rawObserver } = require('./coap-helpers');
const { sleep, waitUntil } = require('../support/util');

const SUBSCRIBE = 'api/realtime/subscribe';
const ACK_DELAY_MS = 60;
let double;
let port;
before(async () => {
  // No periodic CON within the test: only the estimate's CON.
  ({ double, port } = await bootDouble({ coap: { ...FAST, observe: { conEvery: 1_000_000, conIntervalMs: 600_000, queueLength: 100 } } }));
});
after(() => double?.stop());

const observeStats = () => double.protocol.stats().transport.observe;
const sources = (messages) => messages.map((m) => m.body.result._source.n);

/** The peer acknowledges each CON `ms` after it arrived; returns a function that stops it. */
function ackLate(peer, ms) {
  peer.onCon = 'ignore';
  const acked = new Set();
  const timer = setInterval(() => {
    for (const m of peer.messages) {
      if (m.type !== 'CON' || acked.has(m.messageId) || Date.now() - m.at < ms) continue;
      acked.add(m.messageId);
      peer.ack(m.messageId);
    }
  }, 5);
  return () => clearInterval(timer);
}

test(`a burst of 100 events to one relation: 4 NONs at once, a CON for the round-trip estimate, then one NON per round trip (~${ACK_DELAY_MS} ms), in order, none lost`, async () => {
  const peer = await rawObserver(port);
  const stop = ackLate(peer, ACK_DELAY_MS);
  try {
    const query = ['index=i', 'collection=burst'];
    const { token } = await peer.observe(SUBSCRIBE, query);
    const dropped = observeStats().dropped;
    for (let n = 1; n <= 100; n++) double.publish('i', 'burst', { n });
    const notifications = await peer.nextNotifications(token, 100, 20000);
    assert.equal(notifications.length, 100);
    assert.deepEqual(sources(notifications), Array.from({ length: 100 }, (_, i) => i + 1), 'in order');
    assert.deepEqual(notifications.slice(0, 5).map((m) => m.type), ['NON', 'NON', 'NON', 'NON', 'CON'],
      'the burst allowance, then a CON: no round-trip estimate yet');
    const nons = notifications.slice(5);
    assert.ok(nons.every((m) => m.type === 'NON'));
    const gaps = nons.slice(1).map((m, i) => m.at - nons[i].at);
    const sorted = [...gaps].sort((a, b) => a - b);
    assert.ok(sorted[Math.floor(sorted.length / 10)] >= ACK_DELAY_MS * 0.75,
      `NON notifications closer than the round trip: 10th percentile gap ${sorted[Math.floor(sorted.length / 10)]} ms (gaps ${gaps.join(', ')})`);
    assert.equal(observeStats().dropped, dropped, 'none dropped');
    await peer.deregister(token, SUBSCRIBE, query);
  } finally {
    stop();
    await peer.close();
  }
});

test('a burst larger than observe.queueLength: the oldest waiting notifications are dropped, counted and logged; the rest arrive in order', async () => {
  const peer = await rawObserver(port);
  const stop = ackLate(peer, ACK_DELAY_MS);
  try {
    const query = ['index=i', 'collection=overflow'];
    const { token } = await peer.observe(SUBSCRIBE, query);
    const dropped = observeStats().dropped;
    // Five leave at once (4 NONs, then a CON: no estimate yet); 195 wait behind the CON in a queue of 100.
    for (let n = 1; n <= 200; n++) double.publish('i', 'overflow', { n });
    assert.equal(observeStats().dropped - dropped, 95);
    await peer.nextNotifications(token, 105, 20000);
    await sleep(300);
    assert.deepEqual(sources(peer.notifications(token)), [1, 2, 3, 4, 5, ...Array.from({ length: 100 }, (_, i) => i + 101)]);
    assert.ok(await waitUntil(() => double.logs.some((l) => /notification\(s\) dropped by full per-device queues/.test(l.message)), 2000), 'the drops were logged');
    await peer.deregister(token, SUBSCRIBE, query);
  } finally {
    stop();
    await peer.close();
  }
});

test('observe.pacing: false: no CON for an estimate, NON notifications leave at once', async () => {
  const { double: unpaced, port: unpacedPort } = await bootDouble({ coap: { ...FAST, observe: { conEvery: 1_000_000, conIntervalMs: 600_000, pacing: false } } });
  const peer = await rawObserver(unpacedPort);
  try {
    const { token } = await peer.observe(SUBSCRIBE, ['index=i', 'collection=unpaced']);
    for (let n = 1; n <= 20; n++) unpaced.publish('i', 'unpaced', { n });
    const notifications = await peer.nextNotifications(token, 20);
    assert.deepEqual(notifications.map((m) => m.type), Array(20).fill('NON'));
    assert.equal(unpaced.protocol.stats().transport.observe.queued, 0, 'nothing waited');
  } finally {
    await peer.close();
    await unpaced.stop();
  }
});
