'use strict';
/**
 * Liveness of observe relations (issue 10, item 1), with `observe.maxAge: 4` (s): registration
 * answers and notifications carry Max-Age 4; a relation quiet for half to three quarters of it
 * (checked once a second) gets a heartbeat, a CON 2.03 Valid with an ETag, no payload and the next
 * Observe number, so that a live device never goes Max-Age without hearing from its relation. A
 * device that ACKs keeps its relation; one that does not answer loses it, with its Kuzzle
 * subscription, within 3/4 × Max-Age + 1 s + the retransmissions (FAST: 1.4 s), on a collection
 * where nothing is published.
 */
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { FAST, bootDouble, rawObserver } = require('./coap-helpers');
const { option, readUint } = require('../support/raw');
const { sleep, waitUntil } = require('../support/util');

const SUBSCRIBE = 'api/realtime/subscribe';
const MAX_AGE_S = 4;
let double;
let port;
before(async () => {
  ({ double, port } = await bootDouble({ coap: { ...FAST, observe: { maxAge: MAX_AGE_S } } }));
});
after(() => double?.stop());

const maxAgeOf = (message) => {
  const value = option(message, 'Max-Age');
  return value === undefined ? undefined : readUint(value);
};

test('a live device hears its quiet relation at least once per Max-Age: 2.03 heartbeats it ACKs, and keeps the relation', async () => {
  const peer = await rawObserver(port);
  try {
    const query = ['index=i', 'collection=quiet-alive'];
    const { token, response } = await peer.observe(SUBSCRIBE, query);
    assert.equal(response.code, '2.05');
    assert.equal(maxAgeOf(response), MAX_AGE_S, 'the registration answer says how long the relation may stay silent');
    await sleep(9000);
    const heartbeats = peer.notifications(token);
    assert.ok(heartbeats.length >= 2, `${heartbeats.length} heartbeats in 9 s`);
    let previous = response;
    for (const heartbeat of heartbeats) {
      assert.equal(heartbeat.type, 'CON');
      assert.equal(heartbeat.code, '2.03');
      assert.ok(option(heartbeat, 'ETag'), '2.03 carries an ETag');
      assert.equal(heartbeat.payload.length, 0);
      assert.equal(maxAgeOf(heartbeat), MAX_AGE_S);
      assert.ok(heartbeat.observe > previous.observe, 'heartbeats take the next Observe numbers');
      assert.ok(heartbeat.at - previous.at <= MAX_AGE_S * 1000, `${heartbeat.at - previous.at} ms of silence, Max-Age is ${MAX_AGE_S} s`);
      previous = heartbeat;
    }
    assert.equal(double.subscribers(double.roomIdOf('i', 'quiet-alive')), 1);
    assert.equal(double.protocol.stats().transport.observe.relations, 1);
    assert.ok(double.protocol.stats().transport.observe.heartbeats >= heartbeats.length);

    double.publish('i', 'quiet-alive', { n: 1 });
    const notifications = await peer.nextNotifications(token, heartbeats.length + 1);
    const event = notifications.at(-1);
    assert.equal(event.code, '2.05');
    assert.equal(maxAgeOf(event), MAX_AGE_S, 'notifications carry Max-Age too');
    assert.ok(event.observe > previous.observe);
    await peer.deregister(token, SUBSCRIBE, query);
  } finally {
    await peer.close();
  }
});

test('a device that does not answer loses its relation and its Kuzzle subscription on a quiet collection, within the liveness bound', async () => {
  const peer = await rawObserver(port, { onCon: 'ignore' });
  try {
    await peer.observe(SUBSCRIBE, ['index=i', 'collection=quiet-dead']);
    const roomId = double.roomIdOf('i', 'quiet-dead');
    assert.equal(double.subscribers(roomId), 1);
    const bound = 0.75 * MAX_AGE_S * 1000 + 1000 + 1400;
    const start = Date.now();
    assert.ok(await waitUntil(() => double.subscribers(roomId) === 0, bound + 1000), 'Kuzzle subscription still there');
    const took = Date.now() - start;
    assert.ok(took >= 0.5 * MAX_AGE_S * 1000, `ended after ${took} ms: no heartbeat before half of Max-Age`);
    assert.equal(double.protocol.stats().transport.observe.relations, 0);
    assert.equal(double.protocol.stats().realtime.subscriptions, 0);
  } finally {
    await peer.close();
  }
});

test('observe.maxAge: 0: no Max-Age, no heartbeat', async () => {
  const { double: off, port: offPort } = await bootDouble({ coap: { ...FAST, observe: { maxAge: 0 } } });
  const peer = await rawObserver(offPort);
  try {
    const { token, response } = await peer.observe(SUBSCRIBE, ['index=i', 'collection=no-heartbeat']);
    assert.equal(maxAgeOf(response), undefined);
    await sleep(2500);
    assert.equal(peer.notifications(token).length, 0);
    off.publish('i', 'no-heartbeat', { n: 1 });
    const [event] = await peer.nextNotifications(token, 1);
    assert.equal(maxAgeOf(event), undefined);
  } finally {
    await peer.close();
    await off.stop();
  }
});
