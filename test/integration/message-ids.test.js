'use strict';
// Message IDs per remote endpoint (RFC 7252 §4.4; issue 9): 70,000 NON notifications to 10
// devices, one of which holds 61 of the 70 relations. With one sequence shared by all endpoints
// the busy device got 61 of every 70 IDs and met its IDs again after the 16-bit wrap, inside its
// deduplication window, and dropped those notifications. Each device must see every ID once.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { bootDouble, rawObserver } = require('./coap-helpers');
const { waitUntil } = require('../support/util');

const QUERY = ['index=i', 'collection=ids'];
const PUBLICATIONS = 1000;
const RELATIONS = [61, 1, 1, 1, 1, 1, 1, 1, 1, 1]; // per device: 70 notifications a publication

let double;
let port;
const peers = [];
before(async () => {
  // NON only and unpaced, so that no CON waits for its ACK and every notification leaves at once.
  ({ double, port } = await bootDouble({ coap: { observe: { notificationType: 'non', conEvery: 1_000_000, conIntervalMs: 86_400_000, queueLength: 1000, pacing: false } } }));
  for (const count of RELATIONS) {
    const peer = await rawObserver(port);
    for (let i = 0; i < count; i++) assert.equal((await peer.observe('api/realtime/subscribe', QUERY)).response.code, '2.05');
    peers.push(peer);
  }
});
after(async () => {
  await Promise.all(peers.map((peer) => peer.close()));
  await double?.stop();
});

const notificationsOf = (peer) => peer.messages.filter((m) => m.type === 'NON' && m.code === '2.05');

test('70,000 notifications to 10 devices: no device sees a message ID twice', async () => {
  for (let n = 1; n <= PUBLICATIONS; n++) {
    double.publish('i', 'ids', { n });
    // Paced on the busiest device so that no socket buffer overflows; a lost datagram is not a failure here.
    await waitUntil(() => notificationsOf(peers[0]).length >= n * RELATIONS[0], 1000);
  }
  await waitUntil(() => peers.every((peer, i) => notificationsOf(peer).length >= PUBLICATIONS * RELATIONS[i]), 3000);
  const total = peers.reduce((sum, peer) => sum + notificationsOf(peer).length, 0);
  assert.ok(total >= 0.99 * PUBLICATIONS * 70, `${total} of ${PUBLICATIONS * 70} notifications arrived`);
  assert.ok(notificationsOf(peers[0]).length > 0x10000 * 0.9, 'the busy device received most of its 61,000');
  for (const [i, peer] of peers.entries()) {
    const ids = notificationsOf(peer).map((m) => m.messageId);
    const repeated = ids.length - new Set(ids).size;
    assert.equal(repeated, 0, `device ${i} saw ${repeated} message IDs twice among ${ids.length}`);
  }
});
