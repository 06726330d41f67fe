'use strict';
/**
 * Re-registration (RFC 7641 §4.1) and what an ended relation may still send (issue 10, items 2
 * and 3). The same token asking the same (path, query but the JWT, filter) keeps its relation, its
 * Kuzzle subscription and its Observe sequence, on /api/realtime/subscribe (GET and FETCH) and on
 * /channels/<channel>; an event published during the re-registration arrives once. Asking for
 * something else on the same token replaces the relation once answered: events keep arriving on the
 * old one until then. After deregistration, reset or replacement nothing more leaves the socket for
 * the old relation: its queued notifications are purged and its CON in flight stops.
 * (conEvery: 2, so that every second notification is a CON the others queue behind.)
 */
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { FAST, bootDouble, rawObserver } = require('./coap-helpers');
const { sleep, waitUntil } = require('../support/util');

const SUBSCRIBE = 'api/realtime/subscribe';
let double;
let port;
before(async () => {
  ({ double, port } = await bootDouble({ coap: { ...FAST, observe: { conEvery: 2 } } }));
});
after(() => double?.stop());

const calls = (action) => double.calls.get(action) ?? 0;
const observeStats = () => double.protocol.stats().transport.observe;
const sourcesOf = (messages) => messages.map((m) => m.body?.result?._source?.n);

/** Delays Kuzzle's answers to `action` by `ms` while `run` runs. */
async function withSlow(action, ms, run) {
  const execute = double.entryPoint.execute;
  double.entryPoint.execute = function (request, callback) {
    if (`${request.input.controller}:${request.input.action}` === action) setTimeout(() => execute.call(this, request, callback), ms);
    else execute.call(this, request, callback);
  };
  try {
    return await run();
  } finally {
    double.entryPoint.execute = execute;
  }
}

/**
 * Re-registers with the same token while Kuzzle's subscribe is slowed down (150 ms, within the
 * piggyback window), and publishes meanwhile; resolves the registration's answer (the ACK of its
 * message ID: the notification published meanwhile arrives first, on the same token).
 */
async function reregisterWhilePublishing(peer, token, path, query, opts, publish) {
  return withSlow('realtime:subscribe', 150, async () => {
    const from = peer.messages.length;
    const { messageId } = await peer.send({ method: 'GET', ...opts, path, query, token, observe: 0 });
    await sleep(50);
    publish();
    return peer.waitFor((m) => m.type === 'ACK' && m.messageId === messageId && m.code !== '0.00', 3000, { from, what: 'the re-registration\'s answer' });
  });
}

/** Notifications on a token, the answers to its re-registrations left out. */
const notificationsOf = (peer, token, ...answers) => peer.notifications(token).filter((m) => !answers.includes(m));

for (const method of ['GET', 'FETCH']) {
  test(`${method} /api/realtime/subscribe again on the same token keeps the relation, its subscription and its Observe numbers; an event published meanwhile arrives once`, async () => {
    const peer = await rawObserver(port);
    const collection = `same-${method}`;
    const query = ['index=i', `collection=${collection}`];
    const opts = method === 'FETCH' ? { method, payload: { equals: { device: 'a' } } } : {};
    try {
      const { token, response } = await peer.observe(SUBSCRIBE, query, opts);
      assert.equal(response.code, '2.05');
      const roomId = double.roomIdOf('i', collection);
      double.publish('i', collection, { n: 1 });
      const [first] = await peer.nextNotifications(token, 1);
      const subscribes = calls('realtime:subscribe');
      const unsubscribes = calls('realtime:unsubscribe');

      const again = await reregisterWhilePublishing(peer, token, SUBSCRIBE, query, opts, () => double.publish('i', collection, { n: 2 }));
      assert.equal(again.code, '2.05');
      assert.ok(again.observe > first.observe, `Observe ${again.observe} after ${first.observe}: the sequence goes on`);
      assert.equal(calls('realtime:subscribe'), subscribes + 1, 'subscribed again in Kuzzle (its rights checked again)');
      assert.equal(calls('realtime:unsubscribe'), unsubscribes, 'never unsubscribed');
      assert.equal(double.subscribers(roomId), 1);
      assert.equal(observeStats().relations, 1);
      assert.equal(double.protocol.stats().realtime.subscriptions, 1);

      double.publish('i', collection, { n: 3 });
      await peer.nextNotifications(token, 4);
      await sleep(200);
      const notifications = notificationsOf(peer, token, again);
      assert.deepEqual(sourcesOf(notifications), [1, 2, 3], 'each event once, the one published during the re-registration included');
      const last = notifications.at(-1);
      assert.ok(last.observe > again.observe, 'Observe numbers keep increasing after the re-registration');
      await peer.deregister(token, SUBSCRIBE, query, opts);
      assert.ok(await waitUntil(() => double.subscribers(roomId) === 0, 2000));
    } finally {
      await peer.close();
    }
  });
}

test('a re-registration with a refreshed JWT is the same request: the relation stays', async () => {
  const peer = await rawObserver(port);
  try {
    const query = ['index=i', 'collection=refreshed', 'jwt=old-token'];
    const { token, response } = await peer.observe(SUBSCRIBE, query);
    const again = await peer.observe(SUBSCRIBE, ['index=i', 'collection=refreshed', 'jwt=new-token'], { token });
    assert.equal(again.response.code, '2.05');
    assert.ok(again.response.observe > response.observe);
    assert.equal(observeStats().relations, 1);
    assert.equal(double.subscribers(double.roomIdOf('i', 'refreshed')), 1);
    await peer.deregister(token, SUBSCRIBE, query);
  } finally {
    await peer.close();
  }
});

test('GET /channels/<channel> again on the same token keeps the relation: no final 4.04, events arrive once', async () => {
  const peer = await rawObserver(port);
  try {
    const answer = await peer.request({ method: 'POST', path: SUBSCRIBE, query: ['index=i', 'collection=channel-again'] });
    const { roomId, channel } = answer.body.result;
    const { token, response } = await peer.observe(`channels/${channel}`);
    assert.equal(response.code, '2.05');
    double.publish('i', 'channel-again', { n: 1 });
    await peer.nextNotifications(token, 1);
    const unsubscribes = calls('realtime:unsubscribe');
    const again = await peer.observe(`channels/${channel}`, [], { token });
    assert.equal(again.response.code, '2.05');
    assert.ok(again.response.observe > response.observe);
    await sleep(200);
    assert.equal(calls('realtime:unsubscribe'), unsubscribes, 'the re-registration did not unsubscribe');
    assert.equal(double.subscribers(roomId), 1);
    double.publish('i', 'channel-again', { n: 2 });
    await peer.nextNotifications(token, 2);
    await sleep(200);
    const notifications = peer.notifications(token);
    assert.deepEqual(notifications.map((m) => m.code), ['2.05', '2.05'], 'no final notification');
    assert.deepEqual(sourcesOf(notifications), [1, 2]);
    assert.ok(notifications[1].observe > again.response.observe);
    await peer.deregister(token, `channels/${channel}`);
  } finally {
    await peer.close();
  }
});

test('another request on the same token replaces the relation once answered: events reach the old one until then, the Observe numbers go on, the old subscription ends', async () => {
  const peer = await rawObserver(port);
  try {
    const oldQuery = ['index=i', 'collection=replaced-old'];
    const newQuery = ['index=i', 'collection=replaced-new'];
    const { token } = await peer.observe(SUBSCRIBE, oldQuery);
    const oldRoom = double.roomIdOf('i', 'replaced-old');
    double.publish('i', 'replaced-old', { n: 1 });
    const [first] = await peer.nextNotifications(token, 1);

    const again = await reregisterWhilePublishing(peer, token, SUBSCRIBE, newQuery, {}, () => double.publish('i', 'replaced-old', { n: 2 }));
    assert.equal(again.code, '2.05');
    assert.ok(again.observe > first.observe, 'the new relation goes on with the token\'s Observe numbers');
    assert.deepEqual(sourcesOf(notificationsOf(peer, token, again)), [1, 2], 'the event published before the answer reached the old relation');
    assert.ok(await waitUntil(() => double.subscribers(oldRoom) === 0, 2000), 'the old subscription ends');
    assert.equal(observeStats().relations, 1);

    assert.deepEqual(double.publish('i', 'replaced-old', { n: 3 }), [], 'nobody listens on the old room any more');
    double.publish('i', 'replaced-new', { n: 4 });
    await peer.nextNotifications(token, 4);
    await sleep(200);
    const notifications = notificationsOf(peer, token, again);
    assert.deepEqual(sourcesOf(notifications), [1, 2, 4]);
    assert.ok(notifications[2].observe > again.observe);
    await peer.deregister(token, SUBSCRIBE, newQuery);
  } finally {
    await peer.close();
  }
});

/**
 * A relation with a CON notification in flight (the device does not acknowledge it) and `queued`
 * more behind it; resolves {peer, token, query, collection}.
 */
async function withQueue(collection, queued) {
  const peer = await rawObserver(port);
  const query = ['index=i', `collection=${collection}`];
  const { token } = await peer.observe(SUBSCRIBE, query);
  peer.onCon = 'ignore';
  // Events until one goes as a CON (one in conEvery: 2), which the device never acknowledges.
  let n = 0;
  while (!peer.notifications(token).some((m) => m.confirmable)) {
    assert.ok(n < 2, 'no CON among two notifications (conEvery: 2)');
    double.publish('i', collection, { n: ++n });
    await peer.nextNotifications(token, n);
  }
  for (let i = 0; i < queued; i++) double.publish('i', collection, { n: ++n });
  assert.ok(observeStats().queued >= queued, 'notifications wait behind the CON');
  return { peer, token, query, collection };
}

/** Nothing more arrives for the relation's token after `from` (index in the peer's messages), retransmissions included. */
async function assertSilent(peer, token, from, what) {
  await sleep(1000); // FAST: the CON would have been retransmitted twice by now
  const late = peer.ofToken(token, from).filter((m) => m.type !== 'ACK');
  assert.deepEqual(late.map((m) => `${m.type} ${m.code} ${m.body?.result?._source?.n ?? ''}`), [], `sent after ${what}`);
}

for (const [how, end] of [
  ['deregistration', async ({ peer, token, query }) => peer.deregister(token, SUBSCRIBE, query)],
  ['an RST to its CON notification', async ({ peer, token }) => {
    const con = peer.ofToken(token).find((m) => m.type === 'CON');
    await peer.reset(con.messageId);
    await waitUntil(() => observeStats().relations === 0, 2000);
  }],
  ['replacement by another request', async ({ peer, token, collection }) => peer.observe(SUBSCRIBE, ['index=i', `collection=${collection}-next`], { token })],
]) {
  test(`after ${how}, the old relation sends nothing more: queued notifications purged, its CON no longer retransmitted`, async () => {
    const o = await withQueue(`purge-${how.split(' ')[0]}`, 3);
    try {
      const purged = observeStats().purged;
      await end(o);
      const from = o.peer.messages.length;
      assert.equal(observeStats().purged, purged + 3);
      assert.equal(observeStats().queued, 0);
      await assertSilent(o.peer, o.token, from, how);
      assert.equal(double.protocol.stats().transport.retransmitting, 0);
    } finally {
      await o.peer.close();
    }
  });
}

test('a device that re-registers its token 200 times, each for another collection, while Kuzzle is slow: bounded by maxRelationsPerPeer (5.03 past it), and one relation and one Kuzzle subscription remain', async () => {
  const peer = await rawObserver(port);
  try {
    const token = Buffer.from('f100d000', 'hex');
    const subscriptionsBefore = double.protocol.stats().realtime.subscriptions; // earlier tests' devices may leave some
    const relationsBefore = observeStats().relations;
    // Kuzzle answers one subscribe per 20 ms, in order: the registrations pile up, each replacing the
    // previous one once answered. All share the token, and answers past the piggyback window come
    // separate: every message on the token is an answer (nothing is published).
    const answers = await withSlow('realtime:subscribe', 20, async () => {
      for (let i = 0; i < 200; i++) {
        await peer.send({ method: 'GET', path: SUBSCRIBE, query: ['index=i', `collection=churn-${i}`], token, observe: 0, accept: 50 });
      }
      const unique = () => [...new Map(peer.ofToken(token).map((m) => [`${m.type}${m.messageId}`, m])).values()];
      assert.ok(await waitUntil(() => unique().length >= 200, 15000), `${unique().length} of 200 registrations answered`);
      return unique();
    });
    const refused = answers.filter((m) => m.code === '5.03');
    assert.ok(refused.length > 0, 'past maxRelationsPerPeer (64) pending replacements, registrations are refused');
    assert.ok(refused.every((m) => m.body.error.id === 'network.coap.too_many_relations'));
    assert.ok(answers.every((m) => m.code === '2.05' || m.code === '5.03'), [...new Set(answers.map((m) => m.code))].join(', '));
    assert.ok(await waitUntil(() => double.protocol.stats().realtime.subscriptions === subscriptionsBefore + 1, 5000), 'one subscription remains');
    assert.equal(observeStats().relations, relationsBefore + 1);
    const rooms = [...double.rooms.entries()].filter(([, room]) => room.collection.startsWith('churn-') && room.connections.size > 0);
    assert.equal(rooms.length, 1, 'one Kuzzle subscription: every replaced one was unsubscribed');
    const last = answers.findLast((m) => m.code === '2.05');
    assert.equal(rooms[0][0], last.body.result.roomId, 'the last accepted registration is the one that stays');
  } finally {
    await peer.close();
  }
});
