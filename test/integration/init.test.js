'use strict';
// init() rejects with a readable reason on an invalid configuration and when the port is taken.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const dgram = require('node:dgram');
const { startDouble } = require('../support/hostDouble');
const { bootDouble, rawClient } = require('./coap-helpers');

let double; // a running double: its port is taken
let port;
before(async () => ({ double, port } = await bootDouble()));
after(() => double?.stop());

async function rejects(coap, pattern) {
  const other = startDouble({ coap });
  try {
    await assert.rejects(other.start(), pattern);
    assert.equal(other.protocol.listening, null);
  } finally {
    await other.stop();
  }
}

test('port: "abc" → the option, the allowed range and the value', () =>
  rejects({ port: 'abc' }, /invalid configuration: server\.protocols\.coap\.port must be an integer from 0 to 65535, got "abc"/));

test('an unknown option is named', () => rejects({ nope: 1 }, /server\.protocols\.coap\.nope is not an option/));

test('blockSize: 100 → a power of two from 16 to 1024', () =>
  rejects({ blockSize: 100 }, /server\.protocols\.coap\.blockSize must be a power of two from 16 to 1024, got 100/));

test('a nested option is checked too (retransmission.ackTimeoutMs: -1)', () =>
  rejects({ retransmission: { ackTimeoutMs: -1 } }, /server\.protocols\.coap\.retransmission\.ackTimeoutMs must be/));

test('a port held by a plain UDP socket → "the port is in use"', async () => {
  const socket = dgram.createSocket('udp4');
  await new Promise((resolve) => socket.bind(0, '127.0.0.1', resolve));
  try {
    const taken = socket.address().port;
    await rejects({ port: taken }, new RegExp(`cannot listen on UDP \\[127\\.0\\.0\\.1\\]:${taken}: the port is in use`));
  } finally {
    socket.close();
  }
});

test('the port of a running plugin → "the port is in use"; the running one still answers', async () => {
  await rejects({ port }, /the port is in use/);
  const raw = await rawClient(port);
  try {
    assert.equal((await raw.request({ path: '/api/server/now' })).code, '2.05');
  } finally {
    await raw.close();
  }
});
