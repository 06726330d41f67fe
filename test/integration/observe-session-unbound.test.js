'use strict';
/** Sessions are off by default (`bindToken: false`): a login binds nothing to the device. */
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { bootDouble, rawObserver } = require('./coap-helpers');

describe('unbound sessions (bindToken: false, the default)', () => {
  let double;
  let port;
  before(async () => ({ double, port } = await bootDouble()));
  after(() => double?.stop());

  it('a request after auth:login carries no jwt; an explicit one is passed on', async () => {
    const peer = await rawObserver(port);
    try {
      const login = await peer.request({ method: 'POST', path: 'api/auth/login', query: ['expiresIn=1000'] });
      assert.equal(login.code, '2.05');
      assert.equal(typeof login.body.result.jwt, 'string');
      const echo = await peer.request({ method: 'POST', path: 'api/test/echo' });
      assert.equal(echo.code, '2.05');
      assert.equal(echo.body.result.jwt, null);
      const explicit = await peer.request({ method: 'POST', path: 'api/test/echo', query: [`jwt=${login.body.result.jwt}`] });
      assert.equal(explicit.body.result.jwt, login.body.result.jwt);
    } finally {
      await peer.close();
    }
  });
});
