'use strict';
/**
 * Observe with a real client: libcoap's coap-client-notls registers with `-s 3` (GET, or FETCH
 * with a Koncorde filter), prints the registration answer and the notifications of publications
 * made while it observes, then deregisters.
 */
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { bootDouble } = require('./coap-helpers');
const { coapClient, splitJson } = require('../support/peers');
const { waitUntil } = require('../support/util');

/** The double's filter check: every `equals` field of the room's filter holds in the document. */
const equalsMatch = (filters, source) => Object.entries(filters.equals ?? {}).every(([field, value]) => source[field] === value);

describe('observe with coap-client-notls', { concurrency: true }, () => {
  let double;
  let port;
  before(async () => ({ double, port } = await bootDouble()));
  after(() => double?.stop());

  /** Starts an observing coap-client; resolves {done, roomId} once Kuzzle holds its subscription. */
  async function observing(collection, extraArgs, query = '') {
    const uri = `coap://127.0.0.1:${port}/api/realtime/subscribe?index=i&collection=${collection}${query}`;
    const done = coapClient(['-s', '3', '-A', '50', ...extraArgs, uri], { timeoutMs: 10000 });
    let roomId;
    const subscribed = await waitUntil(() => {
      roomId = double.roomIdOf('i', collection);
      return roomId !== undefined && double.subscribers(roomId) === 1;
    }, 3000);
    assert.ok(subscribed, 'coap-client never subscribed');
    return { done, roomId };
  }

  it('GET: prints the registration answer and a notification published while it observes, then deregisters', async () => {
    const { done, roomId } = await observing('get', ['-m', 'get']);
    const channels = double.publish('i', 'get', { temperature: 21.5 });
    assert.equal(channels.length, 1);
    const { exit, stdout, stderr } = await done;
    assert.equal(exit, 0, stderr);
    const values = splitJson(stdout.toString());
    assert.equal(values.length, 2, stdout.toString());
    const [answer, notification] = values;
    assert.equal(answer.status, 200);
    assert.deepEqual(answer.result, { roomId, channel: channels[0] });
    assert.equal(notification.type, 'document');
    assert.equal(notification.action, 'create');
    assert.equal(notification.room, channels[0]);
    assert.deepEqual(notification.result._source, { temperature: 21.5 });
    // At the end of -s, coap-client cancels its relation: Kuzzle's subscription goes with it.
    assert.ok(await waitUntil(() => double.subscribers(roomId) === 0, 2000), 'the subscription outlived the relation');
  });

  it('FETCH with a filter: matching documents arrive, others do not', async () => {
    const filter = { equals: { kind: 'a' } };
    const { done, roomId } = await observing('fetch', ['-m', 'fetch', '-t', '50', '-e', JSON.stringify(filter)]);
    assert.deepEqual(double.rooms.get(roomId).filters, filter);
    assert.deepEqual(double.publish('i', 'fetch', { kind: 'b', n: 1 }, equalsMatch), []);
    assert.equal(double.publish('i', 'fetch', { kind: 'a', n: 2 }, equalsMatch).length, 1);
    assert.deepEqual(double.publish('i', 'fetch', { kind: 'c', n: 3 }, equalsMatch), []);
    const { exit, stdout, stderr } = await done;
    assert.equal(exit, 0, stderr);
    const values = splitJson(stdout.toString());
    assert.equal(values.length, 2, stdout.toString());
    assert.equal(values[0].result.roomId, roomId);
    assert.deepEqual(values[1].result._source, { kind: 'a', n: 2 });
  });

  it('?envelope=compact: {roomId, channel} then notifications as {type, action, event, scope, result}', async () => {
    const { done, roomId } = await observing('compact', ['-m', 'get'], '&envelope=compact');
    const [channel] = double.publish('i', 'compact', { on: true });
    const { exit, stdout, stderr } = await done;
    assert.equal(exit, 0, stderr);
    const values = splitJson(stdout.toString());
    assert.equal(values.length, 2, stdout.toString());
    assert.deepEqual(values[0], { roomId, channel });
    assert.deepEqual(Object.keys(values[1]).sort(), ['action', 'event', 'result', 'scope', 'type']);
    assert.equal(values[1].type, 'document');
    assert.deepEqual(values[1].result._source, { on: true });
  });
});
