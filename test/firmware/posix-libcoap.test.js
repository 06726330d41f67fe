'use strict';

// The POSIX firmware example (firmware-examples/posix-libcoap, C on libcoap 3) against a real
// Kuzzle 2.56 with this plugin (test/kuzzle-host): built with make, run as a device would be,
// checked through Kuzzle's HTTP API. The device user has only the rights a sensor needs.
// A missing make, compiler or libcoap header fails the test (apt-get install make gcc
// libcoap3-dev pkg-config); nothing is skipped. Every spawned process is killed in after().

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { startKuzzleHost } = require('../kuzzle-host');
const {
  buildExample, SensorDevice, provisionSensor, SENSOR, INDEX, binary,
} = require('../support/sensorDevice');

// A short Max-Age, so that the device's silence rule (1.25 × Max-Age + 2 s) acts within the test.
const MAX_AGE_S = 6;
// coaps too, with device credentials from a file (a PSK identity mapped to the sensor user's API key).
const credentialsDir = fs.mkdtempSync(path.join(os.tmpdir(), 'firmware-coaps-'));
const credentialsFile = path.join(credentialsDir, 'devices.json');
fs.writeFileSync(credentialsFile, JSON.stringify({ devices: [] }));
const COAP = { observe: { maxAge: MAX_AGE_S }, coaps: { enabled: true, credentials: { file: credentialsFile } } };
const DTLS_DEVICE = { identity: 'sensor-1-dtls', psk: 'Sensor-1-Pre-Shared-Key' };

let host;
let adminJwt;
const devices = [];

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
};

/** One Kuzzle API call over HTTP; asserts success and returns the result. */
async function api(request, { token = adminJwt } = {}) {
  const response = await fetch(`${host.url}/_query`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify(request),
  });
  const body = await response.json();
  assert.equal(body.status, 200, `${request.controller}:${request.action}: ${body.error?.id} ${body.error?.message}`);
  return body.result;
}

/** The example against this file's Kuzzle; killed in after(). */
class Device extends SensorDevice {
  constructor(args, env = {}) {
    super(args, { port: host.coapPort, env });
    devices.push(this);
  }
}

async function sensorDocuments() {
  const { hits } = await api({ controller: 'document', action: 'search', index: INDEX, collection: 'sensors', size: 1000 });
  return hits.map((hit) => ({ _id: hit._id, ...hit._source })).sort((a, b) => a.ts - b.ts);
}

before(async () => {
  buildExample(); // first: a missing toolchain or libcoap fails here, loudly

  host = await startKuzzleHost({ coap: COAP });
  adminJwt = await provisionSensor(api);
});

after(async () => {
  for (const device of devices) device.kill('SIGKILL');
  await Promise.all(devices.map((device) => device.exited));
  await host?.stop();
  fs.rmSync(credentialsDir, { recursive: true, force: true });
});

test('the example builds with make against libcoap 3 and documents its options', () => {
  const help = spawnSync(binary, ['--help'], { encoding: 'utf8' });
  assert.equal(help.status, 0);
  assert.match(help.stderr, /--period-ms MS/);
  const bad = spawnSync(binary, ['--period-ms', 'fast'], { encoding: 'utf8' });
  assert.equal(bad.status, 2);
});

// One device for the scenario below: login, reports, commands, network change, revoked token.
let device;
let commandCount = 0;

async function sendCommand(period) {
  const { _id } = await api({ controller: 'document', action: 'create', index: INDEX, collection: 'commands', body: { period } });
  commandCount++;
  return _id;
}

test('logs in, observes commands and creates sensor documents with CBOR bodies every 500 ms', async () => {
  device = new Device(['-u', SENSOR.username, '-t', '500', '-T', '120'], { KUZZLE_PASSWORD: SENSOR.password });
  await device.waitFor(/^login ok user=sensor-1 expires_at=\d+ jwt_bytes=\d+$/);
  await device.waitFor(/^clock now=\d+ rtt_ms=\d+$/);
  await device.waitFor(/^observe registered seq=\d+ channel=\S+ max_age_s=6$/);
  await device.waitFor(/^report sent n=6 /, { timeoutMs: 20000 });

  const printed = new Map(device.matches(
    /^report sent n=\d+ id=(\S+) temperature=([\d.]+) humidity=(\d+) uptime=(\d+) ts=(\d+) period_ms=500 bytes=(\d+)$/,
  ).map((m) => [m[1], { temperature: Number(m[2]), humidity: Number(m[3]), uptime: Number(m[4]), ts: Number(m[5]), bytes: Number(m[6]) }]));
  assert.ok(printed.size >= 6, device.output());

  const docs = await sensorDocuments();
  assert.ok(docs.length >= 6, `${docs.length} documents`);
  const now = Date.now();
  for (const doc of docs) {
    // The types a CBOR body gives: a float, integers, a 64-bit integer timestamp.
    assert.equal(typeof doc.temperature, 'number');
    assert.ok(!Number.isInteger(doc.temperature) && doc.temperature > 19 && doc.temperature < 24, `temperature ${doc.temperature}`);
    assert.ok(Number.isInteger(doc.humidity) && doc.humidity >= 40 && doc.humidity <= 49, `humidity ${doc.humidity}`);
    assert.ok(Number.isInteger(doc.uptime) && doc.uptime >= 0 && doc.uptime < 200, `uptime ${doc.uptime}`);
    assert.ok(Number.isInteger(doc.ts) && doc.ts > 1.6e12, `ts ${doc.ts}`);
    assert.ok(Math.abs(doc.ts - now) < 60000, `ts ${doc.ts} is not close to now ${now}`);
    // The device's clock comes from server:now: its ts is within a few ms of Kuzzle's createdAt.
    assert.ok(Math.abs(doc.ts - doc._kuzzle_info.createdAt) < 2000, `ts ${doc.ts} vs createdAt ${doc._kuzzle_info.createdAt}`);
    assert.equal(doc._kuzzle_info.author, SENSOR.username);
    assert.deepEqual(Object.keys(doc).sort(), ['_id', '_kuzzle_info', 'humidity', 'temperature', 'ts', 'uptime']);
    // What Kuzzle stored is what the device says it sent.
    const sent = printed.get(doc._id);
    if (sent) {
      assert.equal(doc.temperature.toFixed(2), sent.temperature.toFixed(2));
      assert.equal(doc.humidity, sent.humidity);
      assert.equal(doc.uptime, sent.uptime);
      assert.equal(doc.ts, sent.ts);
    }
  }
  assert.ok(docs.filter((doc) => printed.has(doc._id)).length >= 6);
  const gaps = docs.slice(1).map((doc, i) => doc.ts - docs[i].ts);
  const gap = median(gaps);
  assert.ok(gap >= 400 && gap <= 800, `median interval ${gap} ms (${gaps.join(', ')})`);
  // Preferred serialization: the body is 47 bytes with a half-float temperature, 53 with a double.
  assert.ok([...printed.values()].every((p) => p.bytes === 47 || p.bytes === 53 || p.bytes === 49));
});

test('a command document sets the period: the device prints it and reports faster', async () => {
  const from = device.lines.length;
  const id = await sendCommand(200);
  await device.waitFor(new RegExp(`^notification seq=\\d+ action=create id=${id} period_ms=200$`), { from });
  const changed = await device.waitFor(new RegExp(`^period changed old_ms=500 new_ms=200 command=${id}$`), { from });
  const since = device.lines.length;
  await device.waitFor(/^report sent n=\d+ .* period_ms=200 /, { from: changed.index });
  await device.waitFor(/^report sent /, { from: since + 10, timeoutMs: 10000 }); // ~10 more reports

  const firstFast = Number(device.matches(/^report sent n=\d+ id=\S+ .* ts=(\d+) period_ms=200 /, changed.index)[0][1]);
  const docs = await sensorDocuments();
  const fast = docs.filter((doc) => doc.ts >= firstFast);
  const slow = docs.filter((doc) => doc.ts < firstFast);
  assert.ok(fast.length >= 8, `${fast.length} documents since the command`);
  const fastGap = median(fast.slice(1).map((doc, i) => doc.ts - fast[i].ts));
  const slowGap = median(slow.slice(1).map((doc, i) => doc.ts - slow[i].ts));
  assert.ok(fastGap >= 150 && fastGap <= 350, `median interval after the command: ${fastGap} ms`);
  assert.ok(slowGap >= 400, `median interval before the command: ${slowGap} ms`);
  assert.ok(fastGap < slowGap * 0.7, `faster: ${fastGap} ms against ${slowGap} ms`);
});

test('a network change (SIGHUP): new socket and session, the observation is registered again', async () => {
  const from = device.lines.length;
  const before = device.matches(/^session open local=(\S+) /).at(-1)[1];
  device.child.kill('SIGHUP');
  await device.waitFor(/^network changed: new session, re-registering$/, { from });
  const opened = await device.waitFor(/^session open local=(\S+) remote=\S+$/, { from });
  assert.notEqual(opened.match[1], before, 'a new local port');
  const registered = await device.waitFor(/^observe registered seq=\d+ /, { from: opened.index });
  await device.waitFor(/^report sent /, { from: registered.index });

  // Commands reach the device through the new relation.
  const id = await sendCommand(300);
  await device.waitFor(new RegExp(`^period changed old_ms=200 new_ms=300 command=${id}$`), { from: registered.index });
  // Exactly one notification for that command: the old relation does not deliver it too.
  await sleep(500);
  assert.equal(device.matches(new RegExp(`^notification .* id=${id} `), from).length, 1);
});

test('a final notification (the token is revoked): logs in again and re-registers', async () => {
  const from = device.lines.length;
  const logins = device.matches(/^login ok /).length;
  await api({ controller: 'security', action: 'revokeTokens', _id: SENSOR.username });
  // Kuzzle drops the subscription: the relation ends with a non-2.xx answer without Observe.
  await device.waitFor(/^observe ended code=4\.\d\d id=\S+ message=".*"$/, { from });
  const relogged = await device.waitFor(/^login ok user=sensor-1 /, { from });
  assert.equal(device.matches(/^login ok /).length, logins + 1);
  const registered = await device.waitFor(/^observe registered seq=\d+ /, { from: relogged.index });
  const sent = await device.waitFor(/^report sent /, { from: relogged.index });

  const id = await sendCommand(250);
  await device.waitFor(new RegExp(`^period changed old_ms=300 new_ms=250 command=${id}$`), { from: registered.index });
  // Reports are accepted again with the new token.
  const docId = sent.match.input.match(/ id=(\S+) /)[1];
  assert.ok((await sensorDocuments()).some((doc) => doc._id === docId));
});

test('SIGTERM: cancels the observation and exits', async () => {
  const from = device.lines.length;
  device.child.kill('SIGTERM');
  const { code } = await device.exited;
  assert.equal(code, 0, device.output());
  assert.ok(device.matches(/^observe cancelled code=2\.05$/, from).length === 1, device.output());
  const exit = device.matches(/^exit reason=stopped docs=(\d+) notifications=(\d+)$/, from)[0];
  assert.ok(exit, device.output());
  assert.equal(Number(exit[2]), commandCount);
  // No subscriber left on the commands collection.
  let list;
  for (let i = 0; i < 30; i++) {
    list = await api({ controller: 'realtime', action: 'list' });
    const rooms = Object.values(list?.[INDEX]?.commands ?? {});
    if (rooms.every((count) => count === 0)) return;
    await sleep(100);
  }
  assert.fail(`subscriptions left: ${JSON.stringify(list)}`);
});

test('with an API key instead of a login, bounded by --max-docs', async () => {
  const { _source: { token } } = await api({
    controller: 'security', action: 'createApiKey', userId: SENSOR.username, expiresIn: -1,
    body: { description: 'firmware test' },
  });
  const before = (await sensorDocuments()).length;
  const keyed = new Device(['-n', '3', '-t', '200', '-T', '30'], { KUZZLE_JWT: token });
  const { code } = await keyed.exited;
  assert.equal(code, 0, keyed.output());
  assert.equal(keyed.matches(/^login /).length, 0, 'no login with a ready token');
  assert.equal(keyed.matches(/^report sent /).length, 3, keyed.output());
  assert.ok(keyed.matches(/^exit reason=max_docs docs=3 /).length === 1, keyed.output());
  assert.equal((await sensorDocuments()).length, before + 3);
});

test('wrong credentials: the device says why and keeps retrying until --max-time-s', async () => {
  const wrong = new Device(['-u', SENSOR.username, '-T', '3'], { KUZZLE_PASSWORD: 'not-the-password' });
  const { code } = await wrong.exited;
  assert.equal(code, 0, wrong.output());
  assert.ok(wrong.matches(/^login failed code=4\.01 id=\S+ message=".+"$/).length >= 2, wrong.output());
  assert.equal(wrong.matches(/^report sent /).length, 0);
  assert.ok(wrong.matches(/^exit reason=max_time docs=0 /).length === 1, wrong.output());
});

test(`a quiet relation: the device hears a 2.03 heartbeat at least every Max-Age (${MAX_AGE_S} s) and keeps one relation`, async () => {
  const quiet = new Device(['-u', SENSOR.username, '-t', '60000', '-T', '60'], { KUZZLE_PASSWORD: SENSOR.password });
  const registered = await quiet.waitFor(/^observe registered seq=(\d+) /);
  const first = await quiet.waitFor(/^observe heartbeat seq=(\d+) max_age_s=6$/, { from: registered.index, timeoutMs: MAX_AGE_S * 1000 + 2000 });
  const second = await quiet.waitFor(/^observe heartbeat seq=(\d+) /, { from: first.index + 1, timeoutMs: MAX_AGE_S * 1000 + 2000 });
  assert.ok(Number(second.match[1]) > Number(first.match[1]) && Number(first.match[1]) > Number(registered.match[1]), 'Observe numbers go on');
  assert.equal(quiet.matches(/^observe renew /).length, 0, 'no silence: no renewal');
  quiet.kill('SIGTERM');
  await quiet.exited;
});

test(`Kuzzle frozen for 12 s (no answer, no ICMP, as behind a NAT that lost its mapping): silent for 1.25 × Max-Age + 2 s, the device registers again; the old relation is deregistered, one subscription stays, a command arrives once`, async () => {
  const frozen = new Device(['-u', SENSOR.username, '-t', '60000', '-T', '120'], { KUZZLE_PASSWORD: SENSOR.password });
  const registered = await frozen.waitFor(/^observe registered /);
  await frozen.waitFor(/^observe heartbeat /, { from: registered.index, timeoutMs: MAX_AGE_S * 1000 + 2000 });
  const from = frozen.lines.length;
  process.kill(host.kuzzle.pid, 'SIGSTOP');
  try {
    await frozen.waitFor(/^observe renew reason=silent$/, { from, timeoutMs: 1.25 * MAX_AGE_S * 1000 + 2000 + 2000 });
    await sleep(3000);
  } finally {
    process.kill(host.kuzzle.pid, 'SIGCONT');
  }
  const renewed = await frozen.waitFor(/^observe renewed seq=\d+ /, { from, timeoutMs: 20000 });
  await frozen.waitFor(/^observe old relation ended code=2\.05$/, { from: renewed.index, timeoutMs: 10000 });
  const rooms = Object.values((await api({ controller: 'realtime', action: 'list' }))?.[INDEX]?.commands ?? {});
  assert.deepEqual(rooms, [1], 'one Kuzzle subscription on commands, kept across the renewal');
  const id = await sendCommand(700);
  await frozen.waitFor(new RegExp(`^period changed old_ms=60000 new_ms=700 command=${id}$`), { from: renewed.index });
  await sleep(1000);
  assert.equal(frozen.matches(new RegExp(`^notification .* id=${id} `), from).length, 1, 'the command arrives once');
  frozen.kill('SIGTERM');
  await frozen.exited;
});

test('a token that expires: the device logs in again 60 s before its end and renews its relation with the new token; after the first token has expired, one subscription stays and a command arrives once', async () => {
  const LIFETIME_S = 64; // refreshed 60 s before its end: about every 4 s
  const renewing = new Device(['-u', SENSOR.username, '-L', `${LIFETIME_S}s`, '-t', '1000', '-T', '120'], { KUZZLE_PASSWORD: SENSOR.password });
  const login = await renewing.waitFor(/^login ok user=sensor-1 expires_at=(\d+) /);
  const firstExpiresAt = Number(login.match[1]);
  const registered = await renewing.waitFor(/^observe registered /, { from: login.index });
  const refresh = await renewing.waitFor(/^login refresh reason=token_expires_soon$/, { from: registered.index, timeoutMs: 10000 });
  const relogged = await renewing.waitFor(/^login ok user=sensor-1 expires_at=(\d+) /, { from: refresh.index });
  assert.ok(Number(relogged.match[1]) > firstExpiresAt, 'a new token, with a later end');
  const renew = await renewing.waitFor(/^observe renew reason=token$/, { from: relogged.index });
  const renewed = await renewing.waitFor(/^observe renewed seq=\d+ /, { from: renew.index });
  await renewing.waitFor(/^observe old relation ended code=2\.05$/, { from: renewed.index });
  // Kuzzle ends what the first token holds when it expires: nothing of the device may still depend on it.
  await sleep(Math.max(0, firstExpiresAt + 2000 - Date.now()));
  const from = renewing.lines.length;
  await renewing.waitFor(/^report sent /, { from, timeoutMs: 5000 });
  const rooms = Object.values((await api({ controller: 'realtime', action: 'list' }))?.[INDEX]?.commands ?? {});
  assert.deepEqual(rooms, [1], 'one Kuzzle subscription on commands, kept across every renewal');
  const id = await sendCommand(900);
  await renewing.waitFor(new RegExp(`^period changed old_ms=1000 new_ms=900 command=${id}$`), { from });
  await sleep(1000);
  assert.equal(renewing.matches(new RegExp(`^notification .* id=${id} `), from).length, 1, 'the command arrives once');
  assert.ok(renewing.matches(/^observe renew reason=token$/).length >= 10, `renewed about every 4 s: ${renewing.output()}`);
  assert.equal(renewing.matches(/^(observe ended |login failed|error )/).length, 0, renewing.output());
  renewing.kill('SIGTERM');
  await renewing.exited;
});

test('coaps with only a PSK identity: no login and no token in any request; the device reports as its Kuzzle user and gets a command', async () => {
  const key = await api({ controller: 'security', action: 'createApiKey', userId: SENSOR.username, refresh: 'wait_for', body: { description: 'firmware coaps' } });
  const reloads = async () => (await host.kuzzle.coapStats()).credentials[0].reloads;
  const before = await reloads();
  fs.writeFileSync(`${credentialsFile}.next`, JSON.stringify({ devices: [{ identity: DTLS_DEVICE.identity, psk: DTLS_DEVICE.psk, apiKey: key._source.token }] }));
  fs.renameSync(`${credentialsFile}.next`, credentialsFile);
  for (let waited = 0; (await reloads()) === before; waited += 100) {
    assert.ok(waited < 8000, 'the plugin reloaded the credentials file');
    await sleep(100);
  }
  const count = (await sensorDocuments()).length;
  const secure = new Device(['-p', String(host.coapsPort), '-I', DTLS_DEVICE.identity, '-t', '500', '-T', '60'], { KUZZLE_PSK_KEY: DTLS_DEVICE.psk });
  await secure.waitFor(new RegExp(`^start host=\\S+ port=${host.coapsPort} .* auth=dtls_identity transport=dtls-psk `));
  const registered = await secure.waitFor(/^observe registered seq=\d+ /);
  await secure.waitFor(/^report sent n=3 /, { timeoutMs: 10000 });
  const documents = (await sensorDocuments()).slice(count);
  assert.ok(documents.length >= 3, `${documents.length} new documents`);
  for (const document of documents) assert.equal(document._kuzzle_info.author, SENSOR.username, 'created as the user the PSK identity names');
  const id = await sendCommand(400);
  await secure.waitFor(new RegExp(`^period changed old_ms=500 new_ms=400 command=${id}$`), { from: registered.index });
  assert.equal(secure.matches(/^login /).length, 0, 'no login on coaps');
  const { secureTransport } = await host.kuzzle.coapStats();
  assert.ok(secureTransport.dtls.sessions >= 1 && secureTransport.dtls.handshakesOk >= 1, JSON.stringify(secureTransport.dtls));
  secure.kill('SIGTERM');
  await secure.exited;
});

test('Kuzzle killed and started again on the same ports, storage and Redis recreated: within 60 s of its restart the device registers again, reports and gets a command', async () => {
  const survivor = new Device(['-u', SENSOR.username, '-t', '500', '-T', '180'], { KUZZLE_PASSWORD: SENSOR.password });
  await survivor.waitFor(/^observe registered /);
  await survivor.waitFor(/^report sent /);
  const { httpPort, coapPort, coapsPort } = host;
  process.kill(host.kuzzle.pid, 'SIGKILL'); // a crash: no final notification tells the device
  await host.stop();
  const from = survivor.lines.length;
  await sleep(2000);
  host = await startKuzzleHost({ port: httpPort, coap: { ...COAP, port: coapPort, coaps: { ...COAP.coaps, port: coapsPort } } });
  const restarted = Date.now();
  adminJwt = await provisionSensor(api);
  const timeoutMs = 60000 - (Date.now() - restarted);
  const registered = await survivor.waitFor(/^observe (registered|renewed) seq=\d+ /, { from, timeoutMs });
  await survivor.waitFor(/^report sent /, { from, timeoutMs: 60000 - (Date.now() - restarted) });
  const id = await sendCommand(450);
  await survivor.waitFor(new RegExp(`^period changed old_ms=500 new_ms=450 command=${id}$`), { from: registered.index, timeoutMs: 60000 - (Date.now() - restarted) });
  // How it found out: its silence rule, or libcoap's errors while Kuzzle was down.
  assert.ok(survivor.matches(/^(observe renew reason=silent|network error: new session|observe ended )/, from).length > 0, survivor.output());
  survivor.kill('SIGTERM');
  await survivor.exited;
});
