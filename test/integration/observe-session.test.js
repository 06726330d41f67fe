'use strict';
/**
 * Sessions with `bindToken: true`: auth:login over CoAP binds its token to the device, later
 * requests without jwt carry it; once it expires, the next request gets 4.01
 * security.token.expired and the device's relations end with a final 4.01.
 */
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { bootDouble, rawObserver } = require('./coap-helpers');
const { sleep } = require('../support/util');

const SUBSCRIBE = 'api/realtime/subscribe';

describe('bound sessions (bindToken: true)', () => {
  let double;
  let port;
  before(async () => ({ double, port } = await bootDouble({ coap: { bindToken: true } })));
  after(() => double?.stop());

  const login = async (peer, expiresIn) => {
    // With bindToken, a login carries a fresh Echo value: the raw peer repeats it with the one of the 4.01.
    const { response: answer } = await peer.requestWithEcho({ method: 'POST', path: 'api/auth/login', query: [`expiresIn=${expiresIn}`] });
    assert.equal(answer.code, '2.05');
    const { jwt, expiresAt } = answer.body.result;
    assert.equal(typeof jwt, 'string');
    return { jwt, expiresAt };
  };
  const echoedJwt = async (peer, query = []) => {
    const answer = await peer.request({ method: 'POST', path: 'api/test/echo', query });
    assert.equal(answer.code, '2.05');
    return answer.body.result.jwt;
  };

  it('requests after login carry the bound jwt; an explicit jwt wins; logout unbinds', async () => {
    const peer = await rawObserver(port);
    const other = await rawObserver(port);
    try {
      const { jwt } = await login(peer, 3_600_000);
      assert.equal(await echoedJwt(peer), jwt);
      assert.equal(await echoedJwt(peer, ['jwt=explicit-token']), 'explicit-token');
      assert.equal(await echoedJwt(other), null, 'the token is bound to one device only');
      const { response: out } = await peer.requestWithEcho({ method: 'POST', path: 'api/auth/logout' });
      assert.equal(out.code, '2.05');
      assert.equal(await echoedJwt(peer), null);
    } finally {
      await peer.close();
      await other.close();
    }
  });

  it('auth:refreshToken rebinds the device to the new token', async () => {
    const peer = await rawObserver(port);
    try {
      const { jwt } = await login(peer, 3_600_000);
      const { response: refresh } = await peer.requestWithEcho({ method: 'POST', path: 'api/auth/refreshToken' });
      assert.equal(refresh.code, '2.05');
      assert.equal(refresh.body.result.refreshed, jwt, 'the refresh ran with the bound token');
      // Kuzzle keeps the old token valid for a grace period only: the device must now use the new one.
      assert.equal(await echoedJwt(peer), refresh.body.result.jwt, 'still bound to the token that was refreshed');
    } finally {
      await peer.close();
    }
  });

  it('after expiresAt: 4.01 security.token.expired, and the relations end with a final 4.01', async () => {
    const peer = await rawObserver(port);
    try {
      const { jwt, expiresAt } = await login(peer, 1000);
      const query = ['index=i', 'collection=session'];
      const { token, response } = await peer.observe(SUBSCRIBE, query);
      assert.equal(response.code, '2.05');
      double.publish('i', 'session', { n: 1 });
      assert.equal((await peer.nextNotifications(token, 1)).length, 1);
      assert.equal(await echoedJwt(peer), jwt);

      await sleep(Math.max(0, expiresAt - Date.now()) + 50);
      const refused = await peer.request({ method: 'POST', path: 'api/test/echo' });
      assert.equal(refused.code, '4.01');
      assert.equal(refused.body.error.id, 'security.token.expired');
      const notifications = await peer.nextNotifications(token, 2);
      assert.equal(notifications.length, 2, 'no final notification');
      const final = notifications[1];
      assert.equal(final.code, '4.01');
      assert.equal(final.observe, undefined);
      assert.equal(final.body.error.id, 'security.token.expired');
      assert.equal(double.protocol.stats().realtime.subscriptions, 0);
      assert.equal(double.protocol.stats().transport.observe.relations, 0);

      // The session is gone: later requests run without a token, and nothing more is notified.
      assert.equal(await echoedJwt(peer), null);
      double.publish('i', 'session', { n: 2 });
      await sleep(100);
      assert.equal(peer.notifications(token).length, 2);
    } finally {
      await peer.close();
    }
  });
});
