'use strict';
/**
 * Failover in a real 3-node Kuzzle 2.56 cluster behind nginx (test/kuzzle-host/cluster, root).
 * Devices reach the cluster only through nginx: the POSIX firmware example (libcoap; it reports
 * every second and observes `commands`) and libcoap coap-client observers. Commands are written
 * over HTTP every 750 ms on a node that stays up. A node serving a firmware device is then killed
 * (SIGKILL), later another is frozen (SIGSTOP: the cluster's watchdog, a liveness probe, kills it).
 *
 * What must hold, and what is measured (printed as diagnostics, stated in the README):
 * - the cluster keeps two nodes (`cluster:status`);
 * - devices of the other nodes go on: every command notified exactly once, every report answered;
 * - a firmware device of the failed node reports again within seconds (nginx moves its session on
 *   the ICMP error of its next datagram) and observes again within the bound its Max-Age sets
 *   (silence for 1.25 × Max-Age + 2 s, then re-registration), after which it gets every command
 *   once; the commands notified between the failure and its re-registration are lost to it, and
 *   counted; a report in flight is answered by another node after a retransmission (a duplicate
 *   document if the failed node had stored it), counted;
 * - no acknowledged report is lost.
 *
 *   npm run build && node --test test/e2e/cluster-failover.test.js
 */
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startKuzzleCluster } = require('../kuzzle-host/cluster');
const { killAll, spawnCoapClient } = require('../support/peers');
const { sleep } = require('../support/util');
const {
  buildExample, SensorDevice, provisionSensor, SENSOR, INDEX,
} = require('../support/sensorDevice');
const { kuzzleHttp, lineJson, waitUntil } = require('./helpers');
const { nodeReached } = require('./clusterConnections');

// Short, so that the firmware's silence rule (1.25 × Max-Age + 2 s = 14.5 s) acts within the test.
const MAX_AGE_S = 10;
const SILENCE_MS = 1.25 * MAX_AGE_S * 1000 + 2000;
// nginx moves a device's session after the node has died only at its fourth datagram: the first
// draws an ICMP error that nginx logs ("recv() failed"), the second's error waits on the socket,
// the third's sendmsg() fails and ends the session (the node is then down for nginx for
// fail_timeout, 120 s), the fourth opens a session on another node. The firmware's datagrams after a
// failure are the retransmissions of its request in flight (its loop waits for the answer), sent
// by libcoap ACK_TIMEOUT (2 s) × 1..1.5 × 1, 3, 7, 15 after the first: when the node dies at
// once, the fourth comes at most 21 s later, which is what the runs show for most devices. But
// ICMP errors are rate-limited by the dead node's kernel (net.ipv4.icmp_ratelimit) and may be
// lost: a datagram that draws none does not count, and a device may need its fifth transmission
// (30-45 s; measured: 43.6 s) or run out of them. A hung node swallows the first ones until the
// watchdog kills it. In the end libcoap gives up the request (MAX_TRANSMIT_WAIT, 93 s) and the
// firmware opens a new session from a new port, which nginx sends to a live node: that is the
// bound, the same for both failures; the figures of each run are printed.
const MARGIN_MS = 4000; // a loaded machine; the firmware's backoff before its new session (0.5 s)
const WATCHDOG = { intervalMs: 1000, timeoutMs: 1000, failures: 3 };
const DETECTION_MS = WATCHDOG.failures * WATCHDOG.intervalMs + WATCHDOG.timeoutMs;
const KILLED_BOUND_MS = 93000 + MARGIN_MS;
const FROZEN_BOUND_MS = DETECTION_MS + 93000 + MARGIN_MS;
const COMMAND_EVERY_MS = 750;

let cluster;
let adminJwt;
let sensorJwt;
const devices = [];

/** Kuzzle's API over a node's own HTTP (a balanced URL could lead to the node being failed). */
const api = (node) => (request, { token = adminJwt } = {}) => kuzzleHttp(node).ok(request, { token });

before(async () => {
  buildExample();
  cluster = await startKuzzleCluster({
    nodes: 3, balancer: 'nginx', watchdog: WATCHDOG, coap: { observe: { maxAge: MAX_AGE_S }, amplification: { echoScope: 'endpoint' } },
  });
  adminJwt = await provisionSensor(api(cluster.nodes[0]));
  sensorJwt = (await api(cluster.nodes[0])({ controller: 'auth', action: 'login', strategy: 'local', body: SENSOR })).jwt;
}, { timeout: 180000 });

after(async () => {
  for (const device of devices) device.kill('SIGKILL');
  await Promise.all(devices.map((device) => device.exited));
  await killAll();
  await cluster?.stop();
}, { timeout: 60000 });

/** Starts a device with `start()`, waits with `ready()`, and returns it with the node it reached through nginx. */
async function placed(start, ready) {
  const { node, result: device } = await nodeReached(cluster.nodes, async () => {
    const started = start();
    await ready(started);
    return started;
  });
  return { device, node };
}

function startFirmware(label) {
  const device = new SensorDevice(['-u', SENSOR.username, '-t', '1000'], {
    port: cluster.balancer.coapPort, env: { KUZZLE_PASSWORD: SENSOR.password }, label,
  });
  devices.push(device);
  return device;
}

function startObserver() {
  return spawnCoapClient(['-s', '240', '-B', '245', '-w', '-A', '50', '-m', 'get', '-O', `15,jwt=${sensorJwt}`,
    `${cluster.balancer.coapUrl}/api/realtime/subscribe?index=${INDEX}&collection=commands`]);
}

/**
 * Firmware devices until two nodes serve at least one (at least 3, at most 6), then coap-client
 * observers likewise (4 to 8): each with the node it reached.
 */
async function startFleet() {
  const firmware = [];
  while (firmware.length < 6 && (firmware.length < 3 || new Set(firmware.map((f) => f.node)).size < 2)) {
    firmware.push(await placed(() => startFirmware(`device${firmware.length}`), (d) => d.waitFor(/^observe registered /)));
  }
  const observers = [];
  while (observers.length < 8 && (observers.length < 4 || new Set(observers.map((o) => o.node)).size < 2)) {
    observers.push(await placed(startObserver, (o) => o.waitLine((l) => l.stream === 'stdout' && l.text.includes('"roomId"'), 10000)));
  }
  return { firmware, observers };
}

const commandIdsOf = (device, from = 0) => device.matches(/^notification seq=\d+ action=create id=(\S+) /, from).map((m) => m[1]);
const observedIdsOf = (observer) => observer.lines.filter((l) => l.stream === 'stdout' && l.text.includes('"document"'))
  .map(lineJson).map((n) => n.result?._id);
const count = (ids, id) => ids.filter((x) => x === id).length;

/**
 * The reports stored against what the devices of the file were told (`report sent ... id=`):
 * acknowledged ones missing from the storage, and the stored ones of the reports timed (their
 * `ts`, Kuzzle's clock, this machine's) in [from, to] that no device was told of.
 */
async function reportsCheck(write, from, to) {
  const logged = new Set(devices.flatMap((device) => device.matches(/^report sent n=\d+ id=(\S+) /).map((m) => m[1])));
  const { hits } = await write({ controller: 'document', action: 'search', index: INDEX, collection: 'sensors', size: 10000 });
  const stored = new Set(hits.map((h) => h._id));
  return {
    missing: [...logged].filter((id) => !stored.has(id)),
    unacknowledged: hits.filter((h) => h._source.ts >= from && h._source.ts <= to && !logged.has(h._id)).length,
  };
}

/**
 * The scenario of both tests: the fleet runs, commands flow, `fail(victim)` at t0; returns what
 * each device saw, once the victim's firmware devices are back and a few more commands went out.
 */
async function failover(t, fleet, victim, fail, boundMs) {
  const writerNode = cluster.nodes.find((n) => n.index !== victim && n.isRunning());
  const write = api(writerNode);
  const commands = []; // {id, at}
  let writing = true;
  const writer = (async () => {
    for (let seq = 0; writing; seq++) {
      const { _id } = await write({ controller: 'document', action: 'create', index: INDEX, collection: 'commands', body: { seq } });
      commands.push({ id: _id, at: Date.now() });
      await sleep(COMMAND_EVERY_MS);
    }
  })();
  try {
    // Every device gets commands before the failure.
    assert.ok(await waitUntil(() => commands.length >= 2, 5000), 'commands are written');
    for (const { device } of fleet.firmware) await device.waitFor(new RegExp(`^notification .* id=${commands[1].id} `), { timeoutMs: 5000 });

    const victims = fleet.firmware.filter((f) => f.node === victim);
    const from = new Map(fleet.firmware.map((f) => [f.device, f.device.lines.length]));
    const t0 = Date.now();
    await fail(victim);

    const statuses = await cluster.waitForNodes(2, 20000);
    const evictedMs = Date.now() - t0;
    assert.ok(statuses.length === 2 && statuses.every((s) => s.activeNodes === 2), 'cluster:status shows two nodes');

    // The victim's firmware devices: reports again, then observe again within the bound.
    const back = [];
    for (const { device } of victims) {
      const start = from.get(device);
      const report = await device.waitFor(/^report sent /, { from: start, timeoutMs: boundMs });
      const renewed = await device.waitFor(/^observe (renewed|registered) seq=\d+ /, { from: start, timeoutMs: boundMs });
      back.push({ device, reportMs: device.times[report.index] - t0, observeMs: device.times[renewed.index] - t0, renewedAt: device.times[renewed.index] });
    }
    const lastBack = Math.max(t0, ...back.map((b) => b.renewedAt));
    // A few more commands after the last re-registration, so that "after" is not empty.
    await waitUntil(() => commands.filter((c) => c.at > lastBack + 1000).length >= 3, 10000);
    writing = false;
    await writer;
    await sleep(1500); // the last notifications, and any duplicate

    const lost = [];
    for (const { device, node } of fleet.firmware) {
      const ids = commandIdsOf(device);
      const mine = back.find((b) => b.device === device);
      for (const c of commands) {
        assert.ok(count(ids, c.id) <= 1, `no command notified twice (${c.id})`);
        const due = !mine || c.at < t0 || c.at > mine.renewedAt + 1000;
        if (due) assert.equal(count(ids, c.id), 1, `device on node ${node}${mine ? ' (failed)' : ''}: command ${c.id} written ${c.at - t0} ms after the failure is notified once`);
      }
      if (mine) lost.push(commands.filter((c) => c.at >= t0 && c.at <= mine.renewedAt && count(ids, c.id) === 0).length);
      assert.ok(device.matches(/^report sent /, from.get(device)).length > 0, 'reports go on');
    }
    for (const { device: observer, node } of fleet.observers.filter((o) => o.node !== victim)) {
      const ids = observedIdsOf(observer);
      for (const c of commands) assert.equal(count(ids, c.id), 1, `coap-client observer on node ${node}: command ${c.id} notified once`);
    }

    // Reports: every acknowledged one is stored; count the failed ones, and the stored ones no
    // device was told of (run by the failed node, whose answer never came).
    // The window leaves out the reports in flight now (every device reports each second).
    const { missing, unacknowledged } = await reportsCheck(write, t0 - 2000, Date.now() - 3000);
    assert.deepEqual(missing, [], 'every acknowledged report is stored');
    const failed = fleet.firmware.reduce((n, { device }) => n + device.matches(/^report failed /, from.get(device)).length, 0);
    const summary = {
      evictedMs,
      victims: victims.length,
      reportBackMs: back.map((b) => b.reportMs),
      observeBackMs: back.map((b) => b.observeMs),
      commandsLost: lost,
      reportsFailed: failed,
      storedNotAcknowledged: unacknowledged,
      survivingDevices: fleet.firmware.length - victims.length,
      survivingObservers: fleet.observers.filter((o) => o.node !== victim).length,
    };
    t.diagnostic(JSON.stringify(summary));
    assert.ok(back.every((b) => b.observeMs <= boundMs), `re-registered within ${boundMs} ms`);
    return summary;
  } finally {
    writing = false;
    await writer.catch(() => {});
  }
}

/** Ends the fleet's devices (the firmware cancels its observation) so that the next test starts clean. */
async function endFleet(fleet) {
  for (const { device } of fleet.firmware) device.kill('SIGTERM');
  await Promise.all(fleet.firmware.map(({ device }) => device.exited));
  await Promise.all(fleet.observers.map(({ device }) => device.kill()));
}

test(`SIGKILL of the node of a firmware device: devices of the other nodes go on; the device reports again once nginx moved it (its fourth datagram that drew an error, at worst when libcoap gives up) and observes again after 1.25 × Max-Age (${MAX_AGE_S} s) + 2 s of silence`, { timeout: 240000 }, async (t) => {
  const fleet = await startFleet();
  const victim = fleet.firmware[0].node;
  t.diagnostic(`firmware on nodes ${fleet.firmware.map((f) => f.node)}, observers on ${fleet.observers.map((o) => o.node)}; killing node ${victim}`);
  await failover(t, fleet, victim, (i) => cluster.killNode(i, 'SIGKILL'), KILLED_BOUND_MS);
  assert.match(cluster.balancer.logs(), /upstream server temporarily disabled/, 'nginx marked the node down');
  await endFleet(fleet);
});

/** Restarts the nodes that are down; resolves once all three are in the cluster again. */
async function restartDeadNodes() {
  for (const node of cluster.nodes) if (!node.isRunning()) await cluster.restartNode(node.index);
  await cluster.waitForNodes(3, 30000);
}

test('SIGSTOP of the node of a firmware device: the watchdog kills the hung node (nginx gets no ICMP from it); devices of the other nodes go on, the device is back when libcoap gives up its request and it opens a new session', { timeout: 300000 }, async (t) => {
  await restartDeadNodes(); // the killed node of the test above joins again
  const fleet = await startFleet();
  const victim = fleet.firmware[0].node;
  t.diagnostic(`firmware on nodes ${fleet.firmware.map((f) => f.node)}, observers on ${fleet.observers.map((o) => o.node)}; freezing node ${victim}`);
  const events = cluster.watchdog.events.length;
  let frozenAt = 0;
  await failover(t, fleet, victim, async (i) => {
    frozenAt = Date.now();
    await cluster.killNode(i, 'SIGSTOP');
  }, FROZEN_BOUND_MS);
  const [event] = cluster.watchdog.events.slice(events);
  assert.equal(event?.node, victim, 'the watchdog acted on the frozen node');
  t.diagnostic(`watchdog killed node ${victim} ${event.at - frozenAt} ms after SIGSTOP: ${event.reason}`);
  assert.ok(!cluster.nodes[victim].isRunning(), 'the frozen node was killed');
  await endFleet(fleet);
});
