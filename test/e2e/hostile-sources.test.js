'use strict';
/**
 * Issue 9, item 1, against the plugin inside a real Kuzzle 2.56: datagrams sent on a raw socket
 * from UDP source port 0 (test/support/spoof.js, root). One such 12-byte datagram used to make
 * dgram.send throw out of the plugin, and Kuzzle's uncaughtException handler stopped Kuzzle.
 *
 *   npm run build && node --test test/e2e/hostile-sources.test.js
 */
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const packet = require('coap-packet');
const { startKuzzleHost } = require('../kuzzle-host');
const { coapClient, killAll } = require('../support/peers');
const { uriOptions } = require('../support/raw');
const { sendSpoofed } = require('../support/spoof');
const { sleep } = require('../support/util');
const { kuzzleHttp } = require('./helpers');

let host;

// piggybackWindowMs 0: an answer that misses the 50 ms tick goes separate (empty ACK, then a CON),
// the path that used to throw later, from the tick.
before(async () => {
  host = await startKuzzleHost({ coap: { piggybackWindowMs: 0 } });
});

after(async () => {
  await killAll();
  await host?.stop();
});

const spoofed = (bytes) => ({ from: '127.0.0.1', fromPort: 0, to: '127.0.0.1', toPort: host.coapPort, bytes });
const con = (messageId, path) => packet.generate({ confirmable: true, code: '0.02', messageId, token: Buffer.from([1, 2, 3, 4]), options: uriOptions(path) });

async function stillRunning() {
  const exit = await Promise.race([host.exited, sleep(50).then(() => null)]);
  assert.equal(exit, null, `Kuzzle exited: ${JSON.stringify(exit)}\n${host.logs().slice(-3000)}`);
  process.kill(host.kuzzle.pid, 0); // throws if the process is gone
}

test('malformed, well-formed and a burst of 300 requests from source port 0: Kuzzle keeps serving CoAP and HTTP', async () => {
  const datagrams = [
    Buffer.from([0x4f, 0x01, 0xab, 0xcd]), // the malformed CON of the report: answered with an RST before the fix
    Buffer.from([0x40, 0x00, 0x00, 0x01]), // CON ping
    con(2, '/api/server/now'),
  ];
  for (let id = 100; id < 400; id++) datagrams.push(con(id, '/api/server/now'));
  assert.equal(await sendSpoofed(datagrams.map(spoofed)), datagrams.length);
  // Time for the tick's empty ACKs, separate responses and their first retransmissions, had any been sent.
  await sleep(3000);
  await stillRunning();

  // Every answer is separate here (piggybackWindowMs 0), and libcoap 4.3.1 does not repeat a request
  // for a 4.01 + Echo that comes separately: ask for a compact answer, within 3× the request.
  const answer = await coapClient(['-m', 'post', '-A', '50', `coap://127.0.0.1:${host.coapPort}/api/server/now?envelope=compact`]);
  assert.equal(answer.exit, 0, answer.stderr);
  assert.ok(answer.stdout.length > 0, `coap-client printed no answer; its stderr: ${answer.stderr}`);
  assert.equal(typeof JSON.parse(answer.stdout.toString()).now, 'number');
  const { now } = await kuzzleHttp(host).ok({ controller: 'server', action: 'now' });
  assert.equal(typeof now, 'number');
  await stillRunning();
});
