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

test('coaps: a credentials file that is not valid fails init with the entry at fault; nothing listens', async () => {
  const fs = require('node:fs');
  const os = require('node:os');
  const path = require('node:path');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'coaps-init-'));
  try {
    const file = path.join(dir, 'devices.json');
    fs.writeFileSync(file, JSON.stringify({ devices: [{ identity: 'a', psk: 'k' }] }));
    await rejects({ port: 0, coaps: { enabled: true, port: 0, credentials: { file } } }, /devices\[0\]\.apiKey must be a Kuzzle API key/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('coaps: when the native DTLS addon cannot load, init fails saying why and how to fix it; plain CoAP does not stay up alone', async () => {
  const { spawnSync } = require('node:child_process');
  // A child process whose require of the addon fails as a wrong build would (another Node's ABI).
  const script = `
    const Module = require('node:module');
    const load = Module._load;
    Module._load = function (request, ...rest) {
      if (String(request).endsWith('kuzzle_coap_dtls.node')) throw new Error('The module was compiled against a different Node.js version');
      return load.call(this, request, ...rest);
    };
    const fs = require('node:fs');
    const file = require('node:path').join(require('node:os').tmpdir(), 'coaps-noaddon-' + process.pid + '.json');
    fs.writeFileSync(file, JSON.stringify({ devices: [] }));
    const { startDouble } = require(${JSON.stringify(require.resolve('../support/hostDouble'))});
    const double = startDouble({ coap: { host: '127.0.0.1', port: 0, coaps: { enabled: true, port: 0, credentials: { file } } } });
    double.start().then(
      () => { console.log('STARTED'); process.exit(1); },
      async (error) => { console.log(JSON.stringify({ message: error.message, listening: double.protocol.listening })); fs.rmSync(file); await double.stop(); },
    );`;
  const run = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 20000 });
  assert.equal(run.status, 0, run.stderr);
  const { message, listening } = JSON.parse(run.stdout.trim().split('\n').pop());
  assert.match(message, /coaps: the native DTLS addon of this plugin .* could not be loaded: The module was compiled against a different Node\.js version/);
  assert.match(message, /npm run build:native/);
  assert.match(message, /Plain CoAP is never used instead/);
  assert.equal(listening, null, 'the plain listener was closed again');
});
