'use strict';
/**
 * `bindToken` without fixation (issue 9, item 5). An attacker sends auth:login with its own
 * credentials, and auth:logout, as from a victim's address (a raw socket, test/support/spoof.js):
 * neither binds nor unbinds anything, because these requests must carry a fresh Echo value, which
 * only who receives at the address gets. A login of another user never replaces a live binding,
 * and logout with another token leaves the binding alone.
 */
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const packet = require('coap-packet');
const { bootDouble, rawObserver } = require('./coap-helpers');
const { uriOptions } = require('../support/raw');
const { sendSpoofed } = require('../support/spoof');
const { sleep } = require('../support/util');

let double;
let port;
before(async () => ({ double, port } = await bootDouble({ coap: { bindToken: true } })));
after(() => double?.stop());

const calls = (action) => double.calls.get(action) ?? 0;

/** The jwt test:echo ran with for this peer (null: none). */
async function boundJwt(peer) {
  const answer = await peer.request({ method: 'POST', path: 'api/test/echo' });
  assert.equal(answer.code, '2.05');
  return answer.body.result.jwt;
}

async function login(peer, user) {
  const { first, response } = await peer.requestWithEcho({ method: 'POST', path: 'api/auth/login', query: [`user=${user}`] });
  assert.equal(first?.code, '4.01', 'a login is challenged first');
  assert.equal(response.code, '2.05');
  return response.body.result.jwt;
}

/** Sends a POST to `path` as from the peer's own address and port. */
function spoofAs(peer, path, query = [], messageId = 0x7000) {
  const bytes = packet.generate({ confirmable: true, code: '0.02', messageId, token: Buffer.from([9, 9, messageId & 0xff]), options: uriOptions(path, query) });
  return sendSpoofed([{ from: '127.0.0.1', fromPort: peer.localPort, to: '127.0.0.1', toPort: port, bytes }]);
}

test('a spoofed auth:login as a verified device that has no session binds nothing, and runs nothing', async () => {
  const victim = await rawObserver(port); // verified (its first GET /.well-known/core)
  try {
    const logins = calls('auth:login');
    await spoofAs(victim, 'api/auth/login', ['user=attacker']);
    await sleep(300);
    assert.equal(calls('auth:login'), logins, 'the login did not run: it carried no Echo value');
    assert.equal(await boundJwt(victim), null, 'nothing bound to the victim');
    // What the victim's socket got is the 4.01 + Echo meant for the attacker: harmless to it.
    assert.ok(victim.messages.some((m) => m.code === '4.01'));
  } finally {
    await victim.close();
  }
});

test('a spoofed auth:logout leaves the victim bound', async () => {
  const victim = await rawObserver(port);
  try {
    const jwt = await login(victim, 'victim');
    assert.equal(await boundJwt(victim), jwt);
    const logouts = calls('auth:logout');
    await spoofAs(victim, 'api/auth/logout', [], 0x7001);
    await sleep(300);
    assert.equal(calls('auth:logout'), logouts, 'the logout did not run');
    assert.equal(await boundJwt(victim), jwt, 'still bound');
  } finally {
    await victim.close();
  }
});

test('a login of another user never replaces a live binding; logout with another token does not unbind', async () => {
  const device = await rawObserver(port);
  try {
    const jwt = await login(device, 'first');
    const otherJwt = await login(device, 'second'); // answered (the device may use it explicitly), not bound
    assert.notEqual(otherJwt, jwt);
    assert.equal(await boundJwt(device), jwt, 'the first user stays bound');
    const { response: foreignLogout } = await device.requestWithEcho({ method: 'POST', path: 'api/auth/logout', query: [`jwt=${otherJwt}`] });
    assert.equal(foreignLogout.code, '2.05');
    assert.equal(await boundJwt(device), jwt, 'logout with another token: still bound');
    // The same user logging in again (a new token) rebinds; logout with the bound token unbinds.
    const again = await login(device, 'first');
    assert.equal(await boundJwt(device), again);
    const { response: logout } = await device.requestWithEcho({ method: 'POST', path: 'api/auth/logout' });
    assert.equal(logout.code, '2.05');
    assert.equal(await boundJwt(device), null);
  } finally {
    await device.close();
  }
});
