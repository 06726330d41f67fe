'use strict';
/**
 * No amplification towards unverified peers (issue 9, item 3; RFC 7252 §11.3, RFC 9175 §2.4), with
 * the default `amplification.factor` 3. Each kind of answer is asked for with a spoofed source: a
 * raw socket sends the request as from 127.20.0.x, where a socket of the test counts every byte
 * the plugin sends back. None may exceed 3 × the bytes of the request, retransmissions included;
 * what does not fit is withheld behind 4.01 + Echo, except a separate answer, which goes as a first
 * Block2 block that fits (its ACK verifies the peer). Then clients that return the Echo value get the
 * withheld answer without a second execution: the raw peer, node-coap (by a helper: node-coap
 * 1.x ignores Echo), coap-client (libcoap 4.3 repeats the request with the value by itself).
 */
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const packet = require('coap-packet');
const coapLib = require('coap');
const { FAST, bigResult, bootDouble, coap, rawObserver } = require('./coap-helpers');
const { killAll } = require('../support/peers');
const { nodeCoapRequest } = require('../support/nodeCoap');
const { blockValue, openRawPeer, option, uint, uriOptions } = require('../support/raw');
const { listenAt, sendSpoofed } = require('../support/spoof');
const { sleep } = require('../support/util');

const FACTOR = 3;
let double;
let port;
// Short retransmissions so that a withheld separate answer's transmissions are all seen.
before(async () => ({ double, port } = await bootDouble({ coap: { ...FAST, amplification: { maxWithheld: 3 } } })));
after(async () => {
  await killAll();
  await double?.stop();
});

const calls = (action) => double.calls.get(action) ?? 0;
const amplification = () => double.protocol.stats().transport.amplification;

let victimCount = 0;
/**
 * Sends `request` (coap-packet fields) as from a fresh 127.20.0.x address, waits `ms`, and
 * returns what that address received: {sent (bytes), received (bytes), messages (parsed)}.
 * `rstCons`: the address answers every CON with an RST (see listenAt).
 */
async function spoofed(request, ms = 1500, { rstCons = false } = {}) {
  const victim = await listenAt(`127.20.0.${++victimCount}`, { rstCons });
  try {
    const bytes = packet.generate({ confirmable: true, messageId: 0x3000 + victimCount, token: Buffer.from([1, 2, 3, 4]), ...request });
    await sendSpoofed([{ from: victim.address, fromPort: victim.port, to: '127.0.0.1', toPort: port, bytes }]);
    await sleep(ms);
    return { sent: bytes.length, received: victim.bytes, messages: victim.messages };
  } finally {
    victim.close();
  }
}

function assertWithinFactor({ sent, received }, what) {
  assert.ok(received <= FACTOR * sent, `${what}: ${received} bytes sent back for a ${sent}-byte request (factor ${FACTOR})`);
}

const echoOf = (message) => message.options.find((o) => o.name === '252')?.value;

test('an API result (server:info, 3 KB): runs once, answered 4.01 + Echo within 3×', async () => {
  const before = calls('server:info');
  const result = await spoofed({ code: '0.02', options: uriOptions('/api/server/info') });
  assertWithinFactor(result, 'API result');
  assert.equal(calls('server:info'), before + 1);
  assert.equal(result.messages.length, 1);
  assert.equal(result.messages[0].code, '4.01');
  assert.ok(echoOf(result.messages[0]), 'the 4.01 carries an Echo value');
});

test('a 1024-byte block: 4.01 + Echo within 3×', async () => {
  const result = await spoofed({ code: '0.02', options: [...uriOptions('/api/server/info'), { name: 'Block2', value: blockValue(0, false, 6) }] });
  assertWithinFactor(result, 'block');
  assert.equal(result.messages[0].code, '4.01');
});

test('link format (/.well-known/core): 4.01 + Echo within 3×', async () => {
  const result = await spoofed({ code: '0.01', options: uriOptions('/.well-known/core') });
  assertWithinFactor(result, 'link format');
  assert.equal(result.messages[0].code, '4.01');
  assert.ok(!result.messages.some((m) => m.payload.includes('</api>')), 'no link in the answer');
});

test('an Observe registration: refused with 4.01 + Echo before anything is subscribed, so no notification follows', async () => {
  const before = calls('realtime:subscribe');
  const result = await spoofed({
    code: '0.01',
    options: [{ name: 'Observe', value: uint(0) }, ...uriOptions('/api/realtime/subscribe', ['index=amp', 'collection=spoofed'])],
  }, 300);
  assertWithinFactor(result, 'registration');
  assert.equal(result.messages.length, 1);
  assert.equal(result.messages[0].code, '4.01');
  assert.equal(calls('realtime:subscribe'), before, 'nothing was subscribed in Kuzzle');
  assert.equal(double.protocol.stats().transport.observe.relations, 0);
});

test('a notification goes to a verified observer only, and the registration of an unverified one succeeds after its Echo round trip', async () => {
  const peer = await rawObserver(port, { verify: false });
  try {
    const token = Buffer.from('0b5e', 'hex');
    const { first, response } = await peer.requestWithEcho({ path: '/api/realtime/subscribe', query: ['index=amp', 'collection=real'], observe: 0, token });
    assert.equal(first.code, '4.01', 'the unverified registration was challenged');
    assert.equal(response.code, '2.05');
    double.publish('amp', 'real', { n: 1 });
    const notes = await peer.nextNotifications(response.token, 1);
    assert.equal(notes.length, 1);
    assert.equal(notes[0].observe > 0, true);
  } finally {
    await peer.close();
  }
});

for (const rstCons of [false, true]) {
  const victimKind = rstCons ? 'a CoAP stack that answers any unexpected CON with an RST' : 'silent';
  test(`a large separate answer (slow action) to an unverified spoofed peer (${victimKind}): empty ACK + a first block that fits 3×; an RST verifies nothing`, async () => {
    const verifiedBefore = double.protocol.stats().transport.peers.verified;
    const result = await spoofed({ code: '0.02', options: uriOptions('/api/test/slow', ['ms=400', 'size=2000']) }, 3000, { rstCons });
    assertWithinFactor(result, 'separate answer');
    assert.ok(result.messages.some((m) => m.ack && m.code === '0.00'));
    const answers = result.messages.filter((m) => m.confirmable);
    assert.ok(answers.length >= 1, 'the separate answer was sent');
    for (const answer of answers) {
      assert.equal(answer.code, '2.05');
      const block2 = answer.options.find((o) => o.name === 'Block2')?.value;
      assert.ok(block2, 'the separate answer is a Block2 block');
      assert.equal(block2[block2.length - 1] >> 4, 0, 'block 0');
      assert.ok(answer.payload.length < 2000, 'never the whole body');
    }
    assert.equal(double.protocol.stats().transport.peers.verified, verifiedBefore, 'the RST did not verify the address');
  });
}

// coap-client 4.3.1 cannot take part: it does not follow Block2 in any separate answer to a POST,
// verified or not ("large body receive internal issue"); the 1.5 s piggybackWindowMs keeps its answers on the ACK.
test('node-coap against a large separate answer: its ACK of the small first block verifies it, it fetches the rest; one execution', async () => {
  const agent = new coapLib.Agent({ type: 'udp4' });
  try {
    const before = calls('test:slow');
    const verifiedBefore = double.protocol.stats().transport.peers.verified;
    const res = await nodeCoapRequest({
      hostname: '127.0.0.1', port, method: 'POST', pathname: '/api/test/slow', query: 'ms=300&size=2000&envelope=compact', agent,
    }, { options: { Accept: 'application/json' } });
    assert.equal(res.code, '2.05');
    assert.equal(res.echoed, false, 'no challenge was needed');
    assert.deepEqual(JSON.parse(res.payload), { waited: 300, filler: 'x'.repeat(2000) });
    assert.equal(calls('test:slow'), before + 1, 'later blocks come from the stored body');
    assert.equal(double.protocol.stats().transport.peers.verified, verifiedBefore + 1, 'the ACK verified node-coap\'s address');
  } finally {
    agent.close();
  }
});

test('raw peer: POST server:info through the Echo round trip runs once and gets the withheld answer', async () => {
  const peer = await openRawPeer(port, { verify: false });
  try {
    const before = calls('server:info');
    const { first, response } = await peer.requestWithEcho({ path: '/api/server/info', payload: { ask: 'info' }, block2: { num: 0, szx: 6 } });
    assert.equal(first.code, '4.01');
    assert.equal(response.code, '2.05');
    assert.equal(response.payload.length, 1024, 'block 0 of the withheld body');
    assert.equal(calls('server:info'), before + 1, 'the action ran once');
    assert.equal(amplification().replayed > 0, true);
    // Verified now: the next block, and the next large answer, come at once.
    const next = await peer.request({ path: '/api/server/info', payload: { ask: 'info' }, block2: { num: 1, szx: 6 } });
    assert.equal(next.code, '2.05');
    assert.deepEqual(option(next, 'ETag'), option(response, 'ETag'), 'the same body');
    assert.equal((await peer.request({ path: '/api/server/info' })).code, '2.05');
    assert.equal(calls('server:info'), before + 2);
  } finally {
    await peer.close();
  }
});

test('a withheld answer no longer held: its Echo repetition gets 5.03 answer_expired, never a second run', async () => {
  const peer = await openRawPeer(port, { verify: false });
  try {
    const before = calls('server:info');
    const first = await peer.request({ path: '/api/server/info', accept: 50 });
    assert.equal(first.code, '4.01');
    // maxWithheld is 3: three more withheld answers (from other unverified peers) push it out.
    for (let i = 0; i < 3; i++) await spoofed({ code: '0.02', options: uriOptions('/api/server/info') }, 100);
    const again = await peer.request({ path: '/api/server/info', accept: 50, options: [{ name: '252', value: option(first, '252') }] });
    assert.equal(again.code, '5.03');
    assert.match(JSON.parse(again.payload).error.id, /answer_expired/);
    assert.equal(calls('server:info'), before + 4, 'run once for this peer (and once for each spoofed one), not twice');
  } finally {
    await peer.close();
  }
});

test('node-coap (no Echo support of its own): the helper repeats with the value; one execution', async () => {
  const agent = new coapLib.Agent({ type: 'udp4' });
  try {
    const before = calls('server:info');
    const res = await nodeCoapRequest({ hostname: '127.0.0.1', port, method: 'POST', pathname: '/api/server/info', agent });
    assert.equal(res.code, '2.05');
    assert.equal(res.echoed, true, 'the first answer was 4.01 + Echo');
    assert.ok(res.payload.length > 2000, 'the whole body, through node-coap\'s Block2');
    assert.equal(calls('server:info'), before + 1);
  } finally {
    agent.close();
  }
});

test('coap-client (libcoap 4.3) repeats the request with the Echo value by itself; one execution', async () => {
  const before = calls('server:info');
  const run = await coap(port, '/api/server/info?envelope=compact', ['-m', 'post', '-A', '50']);
  assert.equal(run.exit, 0);
  assert.equal(run.received.filter((m) => m.code === '4.01').length, 1, 'one 4.01 challenge');
  assert.ok(run.sent.some((m) => /Echo:/.test(m.options)), 'coap-client sent the Echo value back');
  assert.equal(run.last.code, '2.05');
  assert.deepEqual(JSON.parse(run.payload), JSON.parse(JSON.stringify(bigResult())));
  assert.equal(calls('server:info'), before + 1);
});

test('amplification.factor 0 turns the limit off: a spoofed source gets the whole answer', async () => {
  const { double: open, port: openPort } = await bootDouble({ coap: { amplification: { factor: 0 } } });
  try {
    const peer = await openRawPeer(openPort, { verify: false });
    const response = await peer.request({ path: '/api/server/info', block2: { num: 0, szx: 6 } });
    assert.equal(response.code, '2.05');
    assert.equal(response.payload.length, 1024);
    await peer.close();
  } finally {
    await open.stop();
  }
});
