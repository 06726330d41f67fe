'use strict';
/**
 * The CoAP plugin in a real 3-node Kuzzle 2.56 cluster behind the nftables DNAT balancer
 * (test/kuzzle-host/cluster/dnat.js, `balancer: 'nftables'`; needs root, nftables and conntrack).
 * One cluster for the file: nodes A, B, C. Devices of the test process send to the virtual address
 * V = P.250; the root namespace's nat chain sends each device endpoint to one node, and the node
 * sees the device's own address (P.254) and port. What is shown: requests and HTTP through V, the
 * devices' own address in Kuzzle's connections, the spread over the nodes, an observe relation
 * that stays silent 35 s (the table's 1 h conntrack timeout), setNodes() after a crash of node C,
 * the removal of a crashed run's table, and a stop() that leaves no table and no flow.
 *
 *   npm run build && node --test test/e2e/cluster-dnat.test.js
 */
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync, spawn } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { startKuzzleCluster } = require('../kuzzle-host/cluster');
const { removeDnatLeftovers, conntrack } = require('../kuzzle-host/cluster/dnat');
const { kill } = require('../kuzzle-host/cleanup');
const { killAll, spawnCoapClient } = require('../support/peers');
const { openRawPeer } = require('../support/raw');
const { sleep } = require('../support/util');
const {
  coapJson, kuzzleHttp, lineJson, waitUntil, writeAndAwaitNotification,
} = require('./helpers');
const { connectionIds, freshConnections, connectionSnapshot, sharesSince } = require('./clusterConnections');

const INDEX = 'dnat';
// The plugin's Max-Age of observe answers: no heartbeat before 60 s, so the relation below stays
// silent for QUIET_MS (as in cluster.test.js).
const OBSERVE_MAX_AGE = 120;
const QUIET_MS = 35000;
const ENDPOINTS = 60;
const NOW = { method: 'POST', path: '/api/server/now', accept: 50 };
const DNAT_JS = path.join(__dirname, '../kuzzle-host/cluster/dnat.js');

let cluster;
let balancer;
const rawPeers = []; // closed in after()
let devices = null; // the spread test's endpoints: [{peer, node}]
let crashed = null; // the simulated crashed run's process

before(async () => {
  cluster = await startKuzzleCluster({ nodes: 3, balancer: 'nftables', coap: { observe: { maxAge: OBSERVE_MAX_AGE } } });
  ({ balancer } = cluster);
  for (const node of cluster.nodes) node.http = kuzzleHttp(node);
  await cluster.nodes[1].http.ok({ controller: 'index', action: 'create', index: INDEX });
}, { timeout: 180000 });

after(async () => {
  await killAll();
  await Promise.all(rawPeers.map((peer) => peer.close()));
  await cluster?.stop();
  if (crashed) {
    kill(crashed.pid, 'SIGKILL');
    removeDnatLeftovers();
  }
}, { timeout: 60000 });

const nftTables = () => execFileSync('nft', ['list', 'tables'], { encoding: 'utf8' });
/** conntrack -L with filters: the flow lines. */
const conntrackList = (...filters) => conntrack('-L', filters).lines;

/** The node index of each UDP flow through V, by the device's source port. */
const nodeByPort = () => new Map(balancer.flows().filter((f) => f.protocol === 'udp').map((f) => [f.sport, f.node]));

test('through the DNAT address (P.250): coap-client requests and Kuzzle\'s HTTP API answer; the table holds a 1 h UDP timeout', { timeout: 60000 }, async (t) => {
  t.diagnostic(`cluster up in ${cluster.bootMs} ms, DNAT balancer in ${balancer.startMs} ms (${balancer.table}, ${balancer.buckets} buckets)`);
  const { prefix, hostAddress } = cluster.network;
  assert.equal(balancer.kind, 'nftables');
  assert.equal(balancer.coapUrl, `coap://${prefix}.250:5683`);
  assert.equal(balancer.httpUrl, `http://${prefix}.250:7512`);
  assert.equal(balancer.address, hostAddress, 'a node sees the device\'s own address');
  assert.deepEqual(balancer.liveNodes, [0, 1, 2]);
  assert.equal(cluster.nodes[0].loopbackHttpUrl, null, 'no loopback ports: the nodes\' own URLs serve');
  assert.match(nftTables(), new RegExp(`^table ip ${cluster.network.tag}$`, 'm'));
  assert.match(balancer.ruleset(), /policy = \{ unreplied : 3600, replied : 3600 \}/);

  for (let i = 0; i < 5; i++) {
    const { code, body } = await coapJson(`${balancer.coapUrl}/api/server/now`, { timeoutMs: 10000 });
    assert.equal(code, '2.xx', JSON.stringify(body));
    assert.equal(body.status, 200);
    assert.equal(typeof body.result.now, 'number');
  }
  for (let i = 0; i < 3; i++) {
    const response = await fetch(`${balancer.httpUrl}/cluster/_status`, { signal: AbortSignal.timeout(10000) });
    assert.equal(response.status, 200);
    assert.equal((await response.json()).result.activeNodes, 3);
  }
  const udp = balancer.flows().filter((f) => f.protocol === 'udp');
  assert.ok(udp.length >= 5, `the coap-clients' flows are tracked: ${JSON.stringify(udp)}`);
  for (const flow of udp) {
    assert.equal(flow.source, hostAddress);
    assert.ok(flow.node >= 0, `the flow leads to a node: ${JSON.stringify(flow)}`);
    assert.ok(flow.timeout > 3500, `the table's ct timeout applies (1 h): ${flow.timeout} s left`);
  }
});

test(`${ENDPOINTS} device endpoints through DNAT spread over the nodes (server:metrics), and Kuzzle's connections carry the device's own address`, { timeout: 90000 }, async (t) => {
  const { hostAddress } = cluster.network;
  const snapshot = await connectionSnapshot(cluster.nodes);

  // Raw UDP peers, one socket (one source port) each, ten at a time: each shows that it receives
  // at its address (Echo, as devices do) and asks server:now.
  const peers = [];
  for (let first = 0; first < ENDPOINTS; first += 10) {
    const batch = await Promise.all(Array.from({ length: Math.min(10, ENDPOINTS - first) }, () => openRawPeer(balancer.coapPort, {
      address: balancer.host, defaults: { timeoutMs: 2000, retries: 2 },
    })));
    rawPeers.push(...batch);
    peers.push(...batch);
    const answers = await Promise.all(batch.map((peer) => peer.request(NOW)));
    for (const answer of answers) {
      assert.equal(answer.code, '2.05', `${answer.code} ${answer.payload}`);
      assert.equal(typeof answer.body.result.now, 'number');
    }
  }
  assert.equal(new Set(peers.map((peer) => peer.localPort)).size, ENDPOINTS, 'distinct source ports');

  const { shares, counts: afterCounts } = await sharesSince(cluster.nodes, snapshot);
  for (const node of cluster.nodes) assert.ok(shares[node.index] > 0, `node ${node.index} serves some of the devices: shares ${shares}`);
  assert.equal(shares.reduce((x, y) => x + y, 0), ENDPOINTS, `every endpoint is a connection on one node: shares ${shares}`);
  t.diagnostic(`shares of ${ENDPOINTS} endpoints (nodes A, B, C): ${shares.join(', ')}`);

  // conntrack's choice of node for each endpoint agrees with the nodes' counts.
  const byPort = nodeByPort();
  devices = peers.map((peer) => ({ peer, node: byPort.get(peer.localPort) }));
  for (const node of cluster.nodes) {
    assert.equal(devices.filter((d) => d.node === node.index).length, shares[node.index], `node ${node.index}: its flows and its connections agree`);
  }

  for (const node of cluster.nodes) {
    // Kuzzle's connection objects: the new ones carry the device's own address (the test process'), not a balancer's.
    const mine = await freshConnections(node, snapshot.ids[node.index]);
    for (const conn of mine) assert.deepEqual(conn.ips, [hostAddress], `node ${node.index} sees the device's own address`);
    assert.equal((await node.coapStats()).connections, afterCounts[node.index], `node ${node.index}: the plugin's stats() and server:metrics agree`);
  }
});

test(`an observe relation through DNAT stays silent for ${QUIET_MS / 1000} s (conntrack timeout 1 h, Max-Age ${OBSERVE_MAX_AGE} s: no heartbeat), then gets the notification of a document written over HTTP`, { timeout: 120000 }, async (t) => {
  const collection = 'quiet';
  await cluster.nodes[0].http.ok({ controller: 'collection', action: 'create', index: INDEX, collection });
  const known = new Set(balancer.flows().map((f) => f.sport));
  const client = spawnCoapClient(['-s', '110', '-B', '115', '-w', '-A', '50', '-m', 'get',
    `${balancer.coapUrl}/api/realtime/subscribe?index=${INDEX}&collection=${collection}`]);
  try {
    const registration = lineJson(await client.waitLine((l) => l.stream === 'stdout' && l.text.includes('"roomId"'), 10000));
    assert.equal(registration.status, 200);
    const [flow] = balancer.flows().filter((f) => f.protocol === 'udp' && !known.has(f.sport));
    assert.ok(flow, 'the observer\'s flow');
    const holder = cluster.nodes[flow.node];
    const registered = (await holder.coapStats()).transport.observe;

    // Silence: nothing sent either way on the relation for QUIET_MS (longer than conntrack's
    // default UDP timeouts, 30 and 120 s... for the replied state only the table's 1 h holds it).
    const quietFrom = client.lines.length;
    const quietStart = Date.now();
    await sleep(QUIET_MS);
    assert.deepEqual(client.lines.slice(quietFrom).map((l) => l.text), [], 'nothing reached the device while quiet');
    const quiet = (await holder.coapStats()).transport.observe;
    assert.equal(quiet.heartbeats, registered.heartbeats, 'no heartbeat broke the silence');
    assert.equal(quiet.notifications, registered.notifications, 'no notification broke the silence');
    const still = balancer.flows().find((f) => f.protocol === 'udp' && f.sport === flow.sport);
    assert.ok(still && still.node === flow.node, 'the flow is still there, to the same node');
    assert.ok(still.timeout > 3500 - QUIET_MS / 1000, `the flow has most of its hour left: ${still.timeout} s`);

    // A document written over HTTP through DNAT (TCP to V:7512, any node).
    const { notification, ms, written } = await writeAndAwaitNotification({
      client, httpUrl: balancer.httpUrl, index: INDEX, collection, body: { after: 'silence' }, from: quietFrom,
    });
    assert.equal(notification.action, 'create');
    assert.equal(notification.result._source.after, 'silence');
    t.diagnostic(`node ${holder.index} notified ${ms} ms after the write, ${Math.round((written - quietStart) / 1000)} s after the relation's last traffic`);
    assert.equal(client.child.exitCode, null, 'the device still observes');
  } finally {
    await client.kill();
  }
});

test('the next cluster start removes the DNAT table and the flows of a crashed run (SIGKILL, no exit hook)', { timeout: 60000 }, async (t) => {
  // A process of its own starts a DNAT balancer (virtual address P.249, to node A) as a run tagged
  // with its pid would, and is killed: its table and flows are left behind.
  const { prefix, hostAddress } = cluster.network;
  const [a] = cluster.nodes;
  const spec = { net: { prefix, hostAddress }, nodes: [{ address: a.address, coapPort: a.coapPort, httpPort: a.httpPort }], virtualHostNumber: 249 };
  const script = `const spec = ${JSON.stringify(spec)}; spec.net.tag = 'kzc' + process.pid + 'a';
    require(${JSON.stringify(DNAT_JS)}).startDnatBalancer(spec).then((b) => { console.log(b.table); setInterval(() => {}, 1e9); },
      (error) => { console.error(error.message); process.exit(1); });`;
  crashed = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  crashed.stdout.on('data', (chunk) => { output += chunk; });
  crashed.stderr.on('data', (chunk) => { output += chunk; });
  const table = `ip kzc${crashed.pid}a`;
  assert.ok(await waitUntil(() => output.includes(table), 15000), `the crashed run's balancer started: ${output}`);
  crashed.kill('SIGKILL');
  await new Promise((resolve) => crashed.once('exit', resolve));
  const virtual = `${prefix}.249`;
  assert.match(nftTables(), new RegExp(`^table ${table}$`, 'm'));
  assert.ok(conntrackList('-d', virtual).length >= 1, 'its flows are left behind');

  const removed = removeDnatLeftovers();
  assert.doesNotMatch(nftTables(), new RegExp(`^table ${table}$`, 'm'), `the table is gone: ${JSON.stringify(removed)}`);
  assert.deepEqual(conntrackList('-d', virtual), [], 'no flow to its virtual address');
  // Other runs on this machine start clusters too, with the same cleanup: one may have come first.
  if (removed.includes(`nft table ${table}`)) assert.ok(removed.some((r) => r.endsWith(`flow(s) to ${virtual}`)), JSON.stringify(removed));
  else t.diagnostic(`the table was removed by another run's cluster start first: ${JSON.stringify(removed)}`);
  assert.match(nftTables(), new RegExp(`^table ip ${cluster.network.tag}$`, 'm'), 'a live run\'s table is kept');
});

test('after a SIGKILL of node C, the cluster host takes it out of the map (setNodes): C\'s devices are served by A or B on their next request (same endpoint), A\'s and B\'s keep their node, new devices go to A and B', { timeout: 90000 }, async (t) => {
  assert.ok(devices, 'the spread test ran');
  const { hostAddress } = cluster.network;
  const [a, b, c] = cluster.nodes;
  const known = await Promise.all([a, b].map(connectionIds));

  await cluster.killNode(c.index);
  const killed = Date.now();
  assert.ok(await waitUntil(() => balancer.liveNodes.join() === `${a.index},${b.index}`, 5000), 'the exit of C took it out of the map');
  t.diagnostic(`out of the map ${Date.now() - killed} ms after the kill`);
  assert.deepEqual(balancer.flows().filter((f) => f.node === c.index), [], 'no flow leads to C any more');
  assert.doesNotMatch(balancer.ruleset(), new RegExp(`${c.address.replaceAll('.', '\\.')}\\b`), 'C is out of the map');

  // Every device sends its next request. C's are new endpoints where they land: answered at once,
  // or after an Echo round trip.
  const answers = await Promise.all(devices.map(({ peer }) => peer.requestWithEcho({ ...NOW, timeoutMs: 2000, retries: 2 })));
  const servedMs = Date.now() - killed;
  for (const { response } of answers) assert.equal(response.code, '2.05');

  const byPort = nodeByPort();
  const moved = devices.filter((d) => d.node === c.index);
  for (const d of devices) {
    const now = byPort.get(d.peer.localPort);
    if (d.node === c.index) assert.ok(now === a.index || now === b.index, `a device of C is now on A or B: ${now}`);
    else assert.equal(now, d.node, 'a device of A or B keeps its node');
  }
  const arrived = [...await freshConnections(a, known[0]), ...await freshConnections(b, known[1])];
  assert.equal(arrived.length, moved.length, 'one new connection on A or B per device of C, none for the others');
  for (const conn of arrived) assert.deepEqual(conn.ips, [hostAddress], 'still the device\'s own address');
  const toA = moved.filter((d) => byPort.get(d.peer.localPort) === a.index).length;
  t.diagnostic(`C's ${moved.length} devices served ${servedMs} ms after the kill: ${toA} on A, ${moved.length - toA} on B`
    + ` (Echo challenge for ${answers.filter((x, i) => devices[i].node === c.index && x.first).length})`);

  // New devices: only A and B.
  const newcomers = await Promise.all(Array.from({ length: 20 }, () => openRawPeer(balancer.coapPort, {
    address: balancer.host, defaults: { timeoutMs: 2000, retries: 2 },
  })));
  rawPeers.push(...newcomers);
  const codes = await Promise.all(newcomers.map((peer) => peer.request(NOW).then((r) => r.code)));
  assert.deepEqual(codes, codes.map(() => '2.05'));
  const nodesNow = nodeByPort();
  const landed = newcomers.map((peer) => nodesNow.get(peer.localPort));
  assert.ok(landed.every((i) => i === a.index || i === b.index), `new devices on A or B: ${landed}`);
});

test('stop() leaves no nftables table and no conntrack flow of the cluster, no namespace, no lock', { timeout: 60000 }, async (t) => {
  const { tag, prefix } = cluster.network;
  const addresses = cluster.nodes.map((n) => n.address);
  assert.ok(balancer.flows().length > 0, 'flows before stop');
  await cluster.stop();
  assert.doesNotMatch(nftTables(), new RegExp(`^table ip ${tag}$`, 'm'), 'no table left');
  assert.deepEqual(conntrackList('-d', balancer.host), [], 'no flow to the virtual address');
  for (const address of addresses) assert.deepEqual(conntrackList('-g', address), [], `no flow DNATed to ${address}`);
  await balancer.setNodes([0]); // a late watchdog: nothing happens
  assert.doesNotMatch(nftTables(), new RegExp(`^table ip ${tag}$`, 'm'), 'setNodes() after stop() does not bring the table back');
  assert.ok(!execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' }).includes(tag), 'no namespace left');
  assert.ok(!fs.existsSync(`/run/kuzzle-cluster/${prefix}`), 'subnet lock released');
  // Untranslated flows of the subnet (the nodes' own traffic, e.g. to the storage server while
  // they shut down) may remain while the root namespace tracks connections: they carry no NAT.
  const plain = conntrackList('-s', `${prefix}.0`, '--mask-src', '255.255.255.0').length
    + conntrackList('-d', `${prefix}.0`, '--mask-dst', '255.255.255.0').length;
  t.diagnostic(`untranslated conntrack flows of ${prefix}.0/24 left: ${plain}`);
});
