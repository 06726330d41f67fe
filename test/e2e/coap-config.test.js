'use strict';
/**
 * server.protocols.coap in a real Kuzzle 2.56: an invalid value stops Kuzzle's start with a
 * message that names the option, and a failed start leaves no process behind; values given the
 * Kuzzle way (environment variables, as strings) are read.
 *
 *   npm run build && node --test --test-concurrency=1 test/e2e/coap-config.test.js
 */
const { test, after } = require('node:test');
const assert = require('node:assert/strict');
const dgram = require('node:dgram');
const { startKuzzleHost } = require('../kuzzle-host');
const { childProcesses, rawEndpoint, waitUntil } = require('./helpers');

const hosts = new Set();
const sockets = new Set();

after(async () => {
  for (const host of hosts) await host.stop();
  for (const socket of sockets) socket.close();
});

/**
 * Starts a host that must fail; resolves with the error. Asserts that no process of the attempt
 * (Kuzzle, redis-server) is left.
 */
async function failedStart(options) {
  const before = childProcesses();
  let error;
  try {
    const host = await startKuzzleHost(options);
    hosts.add(host); // stopped in after() anyway
  } catch (e) {
    error = e;
  }
  assert.ok(error, `Kuzzle started with ${JSON.stringify(options.coap)}`);
  const left = await waitUntil(() => {
    const now = childProcesses().filter((p) => !before.includes(p));
    return now.length === 0 ? [] : null;
  }, 2000);
  assert.deepEqual(left, [], `processes left: ${childProcesses().filter((p) => !before.includes(p)).join(', ')}`);
  return error;
}

/** The first line of the error, and Kuzzle's own output appended by the host. */
function parts(error) {
  const [first, ...rest] = error.message.split('\n');
  return { first, output: rest.join('\n') };
}

test('port: "abc" stops Kuzzle with a message naming server.protocols.coap.port', async () => {
  const error = await failedStart({ coap: { port: 'abc' } });
  const { first, output } = parts(error);
  assert.match(first, /server\.protocols\.coap\.port\b/);
  assert.match(first, /"abc"/);
  assert.match(output, /Cannot start Kuzzle.*server\.protocols\.coap\.port/, 'Kuzzle logs why it does not start');
});

test('blockSize: 100 stops Kuzzle with a message naming server.protocols.coap.blockSize', async () => {
  const { first, output } = parts(await failedStart({ coap: { blockSize: 100 } }));
  assert.match(first, /server\.protocols\.coap\.blockSize\b.*power of two/);
  assert.match(output, /Cannot start Kuzzle.*server\.protocols\.coap\.blockSize/);
});

test('an unknown option, and a bad nested one, are named', async () => {
  const unknown = parts(await failedStart({ coap: { colour: 'red' } }));
  assert.match(unknown.first, /server\.protocols\.coap\.colour\b/);
  const nested = parts(await failedStart({ coap: { observe: { notificationType: 'sometimes' } } }));
  assert.match(nested.first, /server\.protocols\.coap\.observe\.notificationType\b/);
});

test('a UDP port in use stops Kuzzle with a message naming the port and server.protocols.coap.port', async () => {
  const socket = dgram.createSocket('udp4');
  sockets.add(socket);
  await new Promise((resolve) => socket.bind(0, '127.0.0.1', resolve));
  const { port } = socket.address();
  const { first } = parts(await failedStart({ coap: { port } }));
  assert.match(first, new RegExp(`\\b${port}\\b`));
  assert.match(first, /in use/i);
  // README: "An invalid configuration or a port in use stops Kuzzle's start with a message naming the option."
  assert.match(first, /server\.protocols\.coap\.port\b/, `the message names the option: ${first}`);
});

test('values from environment variables, as strings, are read (kuzzle_server__protocols__coap__*)', async () => {
  const env = {
    kuzzle_server__protocols__coap__blockSize: '64',
    kuzzle_server__protocols__coap__envelope: 'compact',
  };
  Object.assign(process.env, env); // the host's child inherits them; Kuzzle's rc reads them
  let host;
  try {
    host = await startKuzzleHost({});
  } finally {
    for (const name of Object.keys(env)) delete process.env[name];
  }
  hosts.add(host);
  const endpoint = await rawEndpoint(host.coapPort);
  try {
    const first = await endpoint.request({ path: '/api/server/info' });
    assert.equal(first.code, '2.05');
    assert.equal(first.block2?.szx, 2, 'blockSize "64" from the environment');
    assert.equal(first.payload.length, 64);
    const now = await endpoint.request({ path: '/api/server/now' });
    assert.deepEqual(Object.keys(now.body), ['now'], 'envelope "compact" from the environment');
  } finally {
    await endpoint.close();
  }
  await host.stop();
  hosts.delete(host);

  process.env.kuzzle_server__protocols__coap__blockSize = '100';
  try {
    const { first } = parts(await failedStart({}));
    assert.match(first, /server\.protocols\.coap\.blockSize\b/);
  } finally {
    delete process.env.kuzzle_server__protocols__coap__blockSize;
  }
});
