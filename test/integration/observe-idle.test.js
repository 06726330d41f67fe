'use strict';
/**
 * Idle removal (`idleTimeoutMs: 1000`): a device without traffic is removed from Kuzzle, unless
 * it holds a live observe relation; once its relation ends, it becomes idle like any other.
 */
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { bootDouble, rawObserver } = require('./coap-helpers');
const { sleep, waitUntil } = require('../support/util');

const SUBSCRIBE = 'api/realtime/subscribe';
const QUERY = ['index=i', 'collection=idle'];

describe('idle removal with observe relations (idleTimeoutMs: 1000)', () => {
  let double;
  let port;
  before(async () => ({ double, port } = await bootDouble({ coap: { idleTimeoutMs: 1000 } })));
  after(() => double?.stop());

  /** Runs `request` and returns the id of the Kuzzle connection it created. */
  async function newConnection(request) {
    const known = new Set(double.connections.keys());
    await request();
    const created = [...double.connections.keys()].filter((id) => !known.has(id));
    assert.equal(created.length, 1);
    return created[0];
  }

  it('keeps a device with a live relation, removes one without; removes the first once its relation ended', async () => {
    const observer = await rawObserver(port);
    const plain = await rawObserver(port);
    try {
      let relation;
      const observing = await newConnection(async () => {
        relation = await observer.observe(SUBSCRIBE, QUERY);
      });
      assert.equal(relation.response.code, '2.05');
      const idle = await newConnection(async () => {
        const answer = await plain.request({ method: 'POST', path: 'api/server/now' });
        assert.equal(answer.code, '2.05');
      });

      await sleep(3000);
      assert.ok(double.removed.includes(idle), 'the idle device was not removed');
      assert.ok(!double.connections.has(idle));
      assert.ok(double.connections.has(observing), 'a device with a live relation was removed');
      assert.ok(!double.removed.includes(observing));
      assert.equal(double.protocol.stats().connections, 1);
      double.publish('i', 'idle', { still: 'there' });
      assert.equal((await observer.nextNotifications(relation.token, 1)).length, 1);

      await observer.deregister(relation.token, SUBSCRIBE, QUERY);
      assert.ok(await waitUntil(() => double.removed.includes(observing), 3000), 'not removed once idle without relation');
      assert.equal(double.protocol.stats().connections, 0);
    } finally {
      await observer.close();
      await plain.close();
    }
  });
});
