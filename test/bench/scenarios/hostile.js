'use strict';
// Scenarios 5 and 6: a hostile network, against the plugin with the test double behind it.
// - fuzz: mutated datagrams (test/support/fuzzer.js) from 64 endpoints: how many a second the
//   plugin reads and handles, its RSS before and after, and whether a normal request is still
//   answered and nothing faulted.
// - flood: requests from as many spoofed endpoints (127.64.x.y, sent on a raw socket: root),
//   a few of them from addresses where this process listens (127.65.0.x, the "victims"): whether
//   a verified device's retransmitted CON still gets its cached answer and runs once, whether a new
//   device is served, memory against the configured bounds, and the largest bytes-out/bytes-in
//   ratio a victim saw (the amplification limit is 3).
const dgram = require('node:dgram');
const path = require('node:path');
const packet = require('coap-packet');
const { spawnChild } = require('../lib/procs');
const { verifyEndpoint } = require('../lib/coapWire');
const { random, mutate } = require('../../support/fuzzer');
const { uriOptions, uint, blockValue } = require('../../support/raw');
const { listenAt, sendSpoofed } = require('../../support/spoof');
const { sleep } = require('../lib/util');

const PLUGIN = path.join(__dirname, '..', 'servers', 'plugin.js');
const FLOOD_LIMITS = { maxConnections: 10_000, deduplication: { maxEntries: 20_000, maxBytes: 4 * 1024 * 1024 } };

async function openSocket(address = '127.0.0.1') {
  const socket = dgram.createSocket('udp4');
  socket.on('error', () => {});
  await new Promise((resolve) => socket.bind(0, address, resolve));
  return socket;
}

/** One request from `socket` (retransmitted every 300 ms, 5 times); resolves the answer datagram or null. */
function exchange(socket, port, datagram) {
  return new Promise((resolve) => {
    let tries = 0;
    const onMessage = (message) => {
      if (message.readUInt16BE(2) !== datagram.readUInt16BE(2) || message[1] === 0) return;
      clearInterval(timer);
      socket.off('message', onMessage);
      resolve(message);
    };
    const timer = setInterval(() => {
      if (++tries > 5) {
        clearInterval(timer);
        socket.off('message', onMessage);
        resolve(null);
      } else socket.send(datagram, port, '127.0.0.1');
    }, 300);
    socket.on('message', onMessage);
    socket.send(datagram, port, '127.0.0.1');
  });
}

/** A device that verified its address, as a real one does once. */
async function device(port) {
  const socket = await openSocket();
  let mid = Math.floor(Math.random() * 0x10000);
  const nextMid = () => (mid = (mid + 1) & 0xffff);
  const verified = await verifyEndpoint(socket, port, '127.0.0.1', nextMid);
  return { socket, verified, nextMid };
}

const now = (mid) => packet.generate({ confirmable: true, code: '0.02', messageId: mid, token: Buffer.from([mid >> 8, mid & 0xff]), options: uriOptions('/api/server/now') });

async function fuzz({ params, progress, cpu }) {
  const server = await spawnChild(PLUGIN, [JSON.stringify({ entry: 'double' })], { name: 'plugin server (fuzz)', execArgv: ['--expose-gc'], cpu });
  const sockets = [];
  try {
    for (let i = 0; i < 64; i++) {
      const socket = await openSocket(`127.0.0.${2 + (i % 8)}`);
      socket.on('message', () => {});
      sockets.push(socket);
    }
    const before = await server.call('heap');
    const start = (await server.call('stats')).transport.received;
    const next = random(0xc0a9);
    const began = Date.now();
    const BURST = 200;
    for (let sent = BURST; sent <= params.fuzzDatagrams; sent += BURST) {
      for (let i = 0; i < BURST; i++) sockets[next(sockets.length)].send(mutate(next), server.info.port, '127.0.0.1');
      // Paced on what the plugin has read, so that the kernel's queue is not what drops them
      // (a datagram lost there is never read: wait 20 ms at most).
      for (let waits = 0; waits < 20; waits++) {
        if ((await server.call('stats')).transport.received - start >= sent * 0.98) break;
        await sleep(1);
      }
    }
    const read = (await server.call('stats')).transport.received - start;
    const elapsedMs = Date.now() - began;
    await sleep(1500);
    const after = await server.call('heap');
    const t = (await server.call('stats')).transport;
    const probe = await device(server.info.port);
    const answer = await exchange(probe.socket, server.info.port, now(probe.nextMid()));
    probe.socket.close();
    const faults = t.handlerErrors + t.receiveErrors + t.tickErrors;
    const result = {
      datagrams: params.fuzzDatagrams,
      read,
      perSecond: Math.round((read / elapsedMs) * 1000),
      malformed: t.malformed,
      faults,
      rssBefore: before.rss,
      rssAfter: after.rss,
      heapBefore: before.heapUsed,
      heapAfter: after.heapUsed,
      answeredAfter: answer !== null && answer[1] === 0x45,
    };
    progress(`  ${read}/${result.datagrams} mutated datagrams read at ${result.perSecond}/s, ${t.malformed} malformed, ${faults} faults; RSS ${(before.rss / 1048576).toFixed(1)} → ${(after.rss / 1048576).toFixed(1)} MB; served after: ${result.answeredAfter}`);
    return result;
  } finally {
    for (const socket of sockets) socket.close();
    await server.stop();
  }
}

/** What the victims ask, as from their own addresses: one kind of answer each. */
const VICTIM_REQUESTS = [
  { code: '0.02', options: uriOptions('/api/server/info') },
  { code: '0.02', options: [...uriOptions('/api/server/info'), { name: 'Block2', value: blockValue(0, false, 6) }] },
  { code: '0.01', options: uriOptions('/.well-known/core') },
  { code: '0.01', options: [{ name: 'Observe', value: uint(0) }, ...uriOptions('/api/realtime/subscribe', ['index=i', 'collection=c'])] },
  { code: '0.02', options: uriOptions('/api/test/slow', ['ms=1700']) },
];

async function flood({ params, progress, cpu }) {
  const server = await spawnChild(PLUGIN, [JSON.stringify({ entry: 'double', coap: FLOOD_LIMITS })], { name: 'plugin server (flood)', execArgv: ['--expose-gc'], cpu });
  const port = server.info.port;
  const victims = [];
  try {
    const real = await device(port);
    // A CON write of the real device, answered: its answer is cached for EXCHANGE_LIFETIME.
    const write = packet.generate({
      confirmable: true, code: '0.02', messageId: real.nextMid(), token: Buffer.from('d0d0', 'hex'),
      options: [...uriOptions('/api/server/now'), { name: 'Content-Format', value: uint(50) }], payload: Buffer.from('{"seq":0}'),
    });
    const first = await exchange(real.socket, port, write);
    const before = await server.call('heap');

    for (let i = 0; i < 20; i++) victims.push(await listenAt(`127.65.0.${1 + i}`));
    const datagrams = victims.map((victim, i) => {
      const bytes = packet.generate({ confirmable: true, messageId: 0x5000 + i, token: Buffer.from([5, i]), ...VICTIM_REQUESTS[i % VICTIM_REQUESTS.length] });
      victim.sent = bytes.length;
      return { from: victim.address, fromPort: victim.port, to: '127.0.0.1', toPort: port, bytes };
    });
    for (let i = 0; datagrams.length < params.floodEndpoints; i++) {
      datagrams.push({ from: `127.64.${(i >> 8) & 255}.${i & 255}`, fromPort: 10_000 + (i >> 16), to: '127.0.0.1', toPort: port, bytes: now(i & 0xffff) });
    }
    const began = Date.now();
    const sent = await sendSpoofed(datagrams, { perSecond: 5_000 });
    await sleep(3000); // the slow request's separate answer and its retransmissions
    const t = (await server.call('stats'));
    const after = await server.call('heap');

    const again = await exchange(real.socket, port, write); // the device's retransmission
    const executions = await server.call('executions', { expected: 1 });
    const newcomer = await device(port);
    const served = await exchange(newcomer.socket, port, now(newcomer.nextMid()));
    newcomer.socket.close();
    real.socket.close();
    const ratios = victims.map((v) => v.bytes / v.sent);
    const result = {
      endpoints: sent,
      seconds: (Date.now() - began) / 1000,
      read: t.transport.received,
      cachedAnswer: first !== null && again !== null && first.equals(again),
      executedOnce: executions.once === 1 && executions.duplicated === 0,
      newDeviceServed: newcomer.verified && served !== null && served[1] === 0x45,
      maxAmplification: Math.max(...ratios),
      connections: t.connections,
      connectionsEvicted: t.connectionsEvicted,
      dedup: t.transport.deduplication,
      bounds: FLOOD_LIMITS,
      heapGrowth: after.heapUsed - before.heapUsed,
      buffersGrowth: after.arrayBuffers - before.arrayBuffers,
    };
    progress(`  ${sent} spoofed endpoints; device: cached answer ${result.cachedAnswer}, run once ${result.executedOnce}; new device served ${result.newDeviceServed}; largest out/in to a victim ${result.maxAmplification.toFixed(2)}; heap +${(result.heapGrowth / 1048576).toFixed(1)} MB, buffers +${(result.buffersGrowth / 1048576).toFixed(1)} MB`);
    return result;
  } finally {
    for (const victim of victims) victim.close();
    await server.stop();
  }
}

module.exports = { fuzz, flood };
