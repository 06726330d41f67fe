'use strict';
/**
 * The CoAP plugin in a real 3-node Kuzzle 2.56 cluster (test/kuzzle-host/cluster: one network
 * namespace per node, a shared Redis and a shared in-memory storage; needs root). One cluster for
 * the file: nodes A, B, C. A coap-client-notls device observes a collection through node A;
 * documents are written over HTTP on nodes B and C; the device must get each one exactly once.
 * In front of the nodes, nginx (the cluster's `balancer: 'nginx'`, on 127.0.0.1): devices reach
 * the cluster through it, stick to a node each, and a node sees them all at nginx's address.
 *
 *   npm run build && node --test test/e2e/cluster.test.js
 */
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { startKuzzleCluster } = require('../kuzzle-host/cluster');
const { killAll, spawnCoapClient } = require('../support/peers');
const { openRawPeer } = require('../support/raw');
const { sleep } = require('../support/util');
const {
  coapJson, kuzzleHttp, lineJson, waitUntil, writeAndAwaitNotification,
} = require('./helpers');
const {
  connectionIds, freshConnections, nodeReached, connectionSnapshot, sharesSince,
} = require('./clusterConnections');

const INDEX = 'cluster';
const WRITES_PER_NODE = 5;
// The plugin's Max-Age of observe answers: a quiet relation gets a heartbeat after half to three
// quarters of it (60-90 s here), so a relation can stay silent for the 35 s of the test below.
// (60 would send one after 30-45 s.) nginx's proxy_timeout is the balancer's default, 1h.
const OBSERVE_MAX_AGE = 120;
const QUIET_MS = 35000;
const ENDPOINTS = 60;

let cluster;
let a;
let b;
let c;
const rawPeers = []; // closed in after()
const balancedPeers = []; // the endpoints of the spread test, through nginx
let balancedShares = null; // how many of them each node serves

before(async () => {
  // echoScope "endpoint": behind nginx one address is every device (see the Echo test).
  cluster = await startKuzzleCluster({
    nodes: 3, balancer: 'nginx', coap: { observe: { maxAge: OBSERVE_MAX_AGE }, amplification: { echoScope: 'endpoint' } },
  });
  [a, b, c] = cluster.nodes;
  for (const node of cluster.nodes) node.http = kuzzleHttp(node);
  await b.http.ok({ controller: 'index', action: 'create', index: INDEX });
}, { timeout: 180000 });

after(async () => {
  await killAll();
  await Promise.all(rawPeers.map((peer) => peer.close()));
  await cluster?.stop();
}, { timeout: 60000 });

/**
 * A coap-client observing `collection` at `base` for `seconds`; resolves once the registration is
 * answered and every node counts the subscription (the room reaches the others through the cluster).
 */
async function observeEverywhere(base, collection, seconds) {
  const client = spawnCoapClient(['-s', String(seconds), '-B', String(seconds + 5), '-w', '-A', '50', '-m', 'get',
    `${base}/api/realtime/subscribe?index=${INDEX}&collection=${collection}`]);
  const registration = lineJson(await client.waitLine((l) => l.stream === 'stdout' && l.text.includes('"roomId"'), 10000));
  assert.equal(registration.status, 200);
  const { roomId } = registration.result;
  for (const node of cluster.nodes) {
    const known = await waitUntil(async () => (await node.http.api({ controller: 'realtime', action: 'count', body: { roomId } })).result?.count === 1, 10000);
    assert.ok(known, `node ${node.index} counts the subscription`);
  }
  return client;
}

test('startKuzzleCluster refuses to run without root, saying so', { timeout: 30000 }, () => {
  const script = `require(${JSON.stringify(path.join(__dirname, '../kuzzle-host/cluster'))}).startKuzzleCluster()
    .then(() => process.exit(0), (error) => { console.log(error.message); process.exit(3); })`;
  const run = spawnSync(process.execPath, ['-e', script], { uid: 65534, gid: 65534, encoding: 'utf8', timeout: 20000 });
  assert.equal(run.status, 3, `exit ${run.status} ${run.signal ?? ''}: ${run.stderr}`);
  assert.match(run.stdout, /needs root/);
});

test('cluster:status shows the 3 nodes, from every node, over IPC and over HTTP', { timeout: 30000 }, async () => {
  const addresses = cluster.nodes.map((n) => n.address).sort();
  for (const node of cluster.nodes) {
    const status = await cluster.status(node.index);
    assert.equal(status.activeNodes, 3, `node ${node.index}: ${JSON.stringify(status)}`);
    assert.deepEqual(status.nodes.map((n) => n.address).sort(), addresses);
    assert.equal(new Set(status.nodes.map((n) => n.id)).size, 3, 'three distinct node ids');

    const response = await fetch(`${node.url}/cluster/_status`, { signal: AbortSignal.timeout(10000) });
    const body = await response.json();
    assert.equal(response.status, 200);
    assert.equal(body.result.activeNodes, 3);
  }
});

test('a coap-client observing through node A is notified exactly once per document written over HTTP on nodes B and C', { timeout: 90000 }, async () => {
  const collection = 'observed';
  await a.http.ok({ controller: 'collection', action: 'create', index: INDEX, collection });
  // Cluster node ids by address: a notification names the node that handled the write.
  const idOf = new Map((await cluster.status(0)).nodes.map((n) => [n.address, n.id]));

  const client = await observeEverywhere(`coap://${a.address}:${a.coapPort}`, collection, 80);
  try {
    // A count of 1 says the subscription reached B and C, not that their notifiers use it yet: a
    // probe written on each, again until it is notified, shows that a write there reaches A.
    const notified = (id) => client.lines.some((l) => l.stream === 'stdout' && l.text.includes(`"${id}"`));
    for (const node of [b, c]) {
      let live = false;
      for (let attempt = 0; !live && attempt < 20; attempt++) {
        const probe = await node.http.ok({ controller: 'document', action: 'create', index: INDEX, collection, body: { writer: 'probe' } });
        live = await waitUntil(() => notified(probe._id), 500);
      }
      assert.ok(live, `a write on node ${node.index} reaches the observer through node A`);
    }
    const probes = client.lines.filter((l) => l.stream === 'stdout' && l.text.includes('"probe"')).length;

    // B and C write at the same time, each its documents one after the other.
    const writesOn = async (node, writer) => {
      const ids = [];
      for (let seq = 0; seq < WRITES_PER_NODE; seq++) {
        const created = await node.http.ok({ controller: 'document', action: 'create', index: INDEX, collection, body: { writer, seq } });
        ids.push({ id: created._id, writer, seq, node });
      }
      return ids;
    };
    const writes = (await Promise.all([writesOn(b, 'B'), writesOn(c, 'C')])).flat();

    const notifications = () => client.lines.filter((l) => l.stream === 'stdout' && l.text.includes('"document"')).map(lineJson)
      .filter((n) => n.result?._source?.writer !== 'probe');
    const allThere = await waitUntil(() => writes.every((w) => notifications().some((n) => n.result?._id === w.id)), 15000);
    assert.ok(allThere, `every write notified; got ${notifications().length} of ${writes.length}:\n${client.lines.map((l) => l.text).join('\n')}`);
    await sleep(1500); // a duplicate (another node dispatching it too) would arrive by now

    const received = notifications();
    assert.equal(received.length, writes.length, `one notification per write, no more:\n${received.map((n) => n.result?._id).join('\n')}`);
    for (const w of writes) {
      const mine = received.filter((n) => n.result._id === w.id);
      assert.equal(mine.length, 1, `document ${w.id} (${w.writer} #${w.seq}) notified once`);
      const [n] = mine;
      assert.equal(n.type, 'document');
      assert.equal(n.action, 'create');
      assert.equal(n.index, INDEX);
      assert.equal(n.collection, collection);
      assert.deepEqual({ writer: n.result._source.writer, seq: n.result._source.seq }, { writer: w.writer, seq: w.seq });
      assert.equal(n.node, idOf.get(w.node.address), `document ${w.id} was handled by node ${w.writer}`);
    }
    assert.ok(!received.some((n) => n.node === idOf.get(a.address)), 'no write went through node A');
    assert.ok(probes >= 2, 'the probes were notified');
  } finally {
    await client.kill();
  }
});


test('through the balancer (nginx on 127.0.0.1): coap-client requests succeed, and its HTTP and each node\'s HTTP answer on loopback', { timeout: 60000 }, async (t) => {
  const { balancer } = cluster;
  t.diagnostic(`cluster up in ${cluster.bootMs} ms, nginx of it in ${balancer.startMs} ms`);
  assert.match(balancer.coapUrl, /^coap:\/\/127\.0\.0\.1:\d+$/);
  assert.match(balancer.httpUrl, /^http:\/\/127\.0\.0\.1:\d+$/);
  for (let i = 0; i < 5; i++) {
    const { code, body } = await coapJson(`${balancer.coapUrl}/api/server/now`, { timeoutMs: 10000 });
    assert.equal(code, '2.xx', JSON.stringify(body));
    assert.equal(body.status, 200);
    assert.equal(typeof body.result.now, 'number');
  }
  const now = await fetch(`${balancer.httpUrl}/_now`, { signal: AbortSignal.timeout(10000) });
  assert.equal(now.status, 200);
  assert.equal(typeof (await now.json()).result.now, 'number');
  for (const node of cluster.nodes) {
    assert.match(node.loopbackHttpUrl, /^http:\/\/127\.0\.0\.1:\d+$/);
    const response = await fetch(`${node.loopbackHttpUrl}/cluster/_status`, { signal: AbortSignal.timeout(10000) });
    assert.equal(response.status, 200);
    assert.equal((await response.json()).result.activeNodes, 3);
  }
});

test(`an observe relation through the balancer stays silent for ${QUIET_MS / 1000} s (nginx proxy_timeout 1h, Max-Age ${OBSERVE_MAX_AGE} s: no heartbeat), then gets the notification of a document written over HTTP`, { timeout: 120000 }, async (t) => {
  const collection = 'quiet';
  await a.http.ok({ controller: 'collection', action: 'create', index: INDEX, collection });
  assert.equal(cluster.balancer.proxyTimeout, '1h');
  const observeStats = async () => Promise.all(cluster.nodes.map(async (n) => (await n.coapStats()).transport.observe));
  const before = await observeStats();

  const client = await observeEverywhere(cluster.balancer.coapUrl, collection, 110);
  try {
    const registered = await observeStats();
    const holders = cluster.nodes.filter((n) => registered[n.index].relations > before[n.index].relations);
    assert.equal(holders.length, 1, `one node holds the relation: ${JSON.stringify(registered)}`);
    const [holder] = holders;

    // Silence: nothing sent either way on the relation for QUIET_MS.
    const quietFrom = client.lines.length;
    const quietStart = Date.now();
    await sleep(QUIET_MS);
    assert.deepEqual(client.lines.slice(quietFrom).map((l) => l.text), [], 'nothing reached the device while quiet');
    const quiet = (await observeStats())[holder.index];
    assert.equal(quiet.heartbeats, registered[holder.index].heartbeats, 'no heartbeat broke the silence');
    assert.equal(quiet.notifications, registered[holder.index].notifications, 'no notification broke the silence');
    assert.equal(quiet.relations, registered[holder.index].relations, 'the relation is still there');

    // A document written over HTTP, through the balancer's HTTP side (any node).
    const { notification, ms, written } = await writeAndAwaitNotification({
      client, httpUrl: cluster.balancer.httpUrl, index: INDEX, collection, body: { after: 'silence' }, from: quietFrom,
    });
    assert.equal(notification.action, 'create');
    assert.deepEqual(notification.result._source.after, 'silence');
    t.diagnostic(`notified ${ms} ms after the write, ${Math.round((written - quietStart) / 1000)} s after the relation's last traffic`);
    assert.equal(client.child.exitCode, null, 'the device still observes');
  } finally {
    await client.kill();
  }
});

test(`${ENDPOINTS} device endpoints through the balancer spread over the nodes: server:metrics counts each node's share, and Kuzzle's connections carry nginx's address`, { timeout: 90000 }, async (t) => {
  const { balancer } = cluster;
  const snapshot = await connectionSnapshot(cluster.nodes);

  // Raw UDP peers, one socket (one source port) each: each shows that it receives at its address
  // (Echo, as devices do) and asks server:now. Ten at a time.
  for (let first = 0; first < ENDPOINTS; first += 10) {
    const batch = await Promise.all(Array.from({ length: Math.min(10, ENDPOINTS - first) }, () => openRawPeer(balancer.coapPort, {
      address: '127.0.0.1', defaults: { timeoutMs: 2000, retries: 2 },
    })));
    rawPeers.push(...batch);
    balancedPeers.push(...batch);
    const answers = await Promise.all(batch.map((peer) => peer.request({ method: 'POST', path: '/api/server/now', accept: 50 })));
    for (const answer of answers) {
      assert.equal(answer.code, '2.05', `${answer.code} ${answer.payload}`);
      assert.equal(typeof answer.body.result.now, 'number');
    }
  }
  assert.equal(new Set(rawPeers.map((peer) => peer.localPort)).size, ENDPOINTS, 'distinct source ports');

  const { shares, counts: afterCounts } = await sharesSince(cluster.nodes, snapshot);
  for (const node of cluster.nodes) {
    assert.ok(shares[node.index] > 0, `node ${node.index} serves some of the devices: shares ${shares}`);
  }
  assert.equal(shares.reduce((x, y) => x + y, 0), ENDPOINTS, `every endpoint is a connection on one node: shares ${shares}`);
  t.diagnostic(`shares of ${ENDPOINTS} endpoints (nodes A, B, C): ${shares.join(', ')}`);
  balancedShares = shares;

  for (const node of cluster.nodes) {
    // Kuzzle's connection objects: the new ones carry nginx's (bind) address, one per endpoint.
    for (const conn of await freshConnections(node, snapshot.ids[node.index])) assert.deepEqual(conn.ips, [balancer.address], `node ${node.index} sees nginx's address`);
    // The plugin's own count agrees with Kuzzle's.
    assert.equal((await node.coapStats()).connections, afterCounts[node.index], `node ${node.index}: the plugin's stats() and server:metrics agree`);
  }

  // A device talking to a node directly is seen at its own address (here the test process').
  const direct = await openRawPeer(a.coapPort, { address: a.address, defaults: { timeoutMs: 2000, retries: 2 } });
  rawPeers.push(direct);
  const aIds = await connectionIds(a);
  assert.equal((await direct.request({ method: 'POST', path: '/api/server/now', accept: 50 })).code, '2.05');
  const mine = await freshConnections(a, aIds);
  assert.deepEqual(mine.map((conn) => conn.ips), [[cluster.network.hostAddress]]);
  assert.notEqual(cluster.network.hostAddress, balancer.address);
});

test('behind nginx every device has nginx\'s address: with amplification.echoScope "endpoint", an Echo value one device received does not verify another device of the same node', { timeout: 60000 }, async () => {
  const open = async () => {
    // Unverified (verify: false): what the test is about.
    const peer = await openRawPeer(cluster.balancer.coapPort, { address: '127.0.0.1', verify: false, defaults: { timeoutMs: 2000, retries: 2 } });
    rawPeers.push(peer);
    return peer;
  };
  const large = { method: 'POST', path: '/api/server/info', accept: 50 }; // a few KB: over the limit
  const echoOf = (response) => response.options.find((o) => o.name === '252')?.value;

  const device = await open();
  const { node, result: challenge } = await nodeReached(cluster.nodes, () => device.request(large));
  assert.equal(challenge.code, '4.01', 'an unverified endpoint is challenged before a large answer');
  const value = echoOf(challenge);
  assert.ok(value, 'with an Echo value');

  // Another device behind nginx, on the same node (the value of another node's secret would fail anyway).
  let neighbour = null;
  for (let tries = 0; !neighbour && tries < 20; tries++) {
    const peer = await open();
    const placed = await nodeReached(cluster.nodes, () => peer.request(large));
    assert.equal(placed.result.code, '4.01', 'a second unverified device is challenged too');
    if (placed.node === node) neighbour = peer;
  }
  assert.ok(neighbour, `a second device reached node ${node}`);
  const borrowed = await neighbour.request({ ...large, options: [{ name: '252', value }] });
  assert.equal(borrowed.code, '4.01', 'the value of another device does not verify this one');
  assert.notDeepEqual(echoOf(borrowed), value, 'it gets a value of its own');
  const own = await device.request({ ...large, options: [{ name: '252', value }] });
  assert.equal(own.code, '2.05', 'the device the value was sent to is verified by it');
  assert.match(own.payload.toString(), /^\{"/, 'the answer\'s first block');
});

test('after a SIGKILL of node C, nginx skips it (ICMP port unreachable, max_fails=1): A\'s and B\'s devices keep their node, new devices go to A and B, C\'s devices come back as new endpoints on A or B', { timeout: 120000 }, async (t) => {
  assert.ok(balancedShares, 'the spread test ran');
  const request = { method: 'POST', path: '/api/server/now', accept: 50 };
  const known = await Promise.all([a, b].map(connectionIds));

  await cluster.killNode(c.index);
  const killed = Date.now();

  // One datagram each: a device of A or B is answered within its nginx session, as before; a
  // device of C is not (its session still leads to C).
  const first = await Promise.all(balancedPeers.map((peer) => peer.request({ ...request, timeoutMs: 1500 }).then((r) => r.code, () => null)));
  const kept = balancedPeers.filter((_, i) => first[i] === '2.05');
  const pinned = balancedPeers.filter((_, i) => first[i] === null);
  assert.equal(kept.length, balancedShares[0] + balancedShares[1], `A's and B's devices are answered: ${first}`);
  assert.equal(pinned.length, balancedShares[2], 'C\'s devices are not');
  for (const [i, node] of [a, b].entries()) {
    assert.deepEqual(await freshConnections(node, known[i]), [], `node ${node.index}: its devices kept their connection (same nginx session)`);
  }

  // C's devices go on sending (every 2 s, as a device retransmits). nginx ends a session when a
  // datagram to C fails with "connection refused" (ICMP port unreachable) and marks C down; the
  // device's next datagram opens a session on A or B, where it is a new, unverified endpoint: it
  // gets 4.01 with an Echo value, and its repetition the answer. The kernel of C's side sends
  // nginx's address about one port unreachable a second, so they come back one after the other.
  const results = await Promise.all(pinned.map(async (peer) => {
    try {
      const { first: challenge, response } = await peer.requestWithEcho({ ...request, timeoutMs: 2000, retries: 12 });
      return { code: response.code, challenged: challenge !== null, ms: Date.now() - killed };
    } catch {
      return null;
    }
  }));
  const back = results.filter(Boolean);
  t.diagnostic(`C's ${pinned.length} devices: ${back.length} back on A or B, after ${back.map((r) => (r.ms / 1000).toFixed(1)).sort((x, y) => x - y).join(', ')} s`
    + ` (Echo challenge for ${back.filter((r) => r.challenged).length})`);
  assert.ok(back.length >= 1, 'at least one of C\'s devices is served by A or B');
  for (const r of back) assert.equal(r.code, '2.05');
  await sleep(200);
  const moved = [...await freshConnections(a, known[0]), ...await freshConnections(b, known[1])];
  assert.ok(moved.length >= back.length && moved.length <= pinned.length, `each device back is a new connection on A or B: ${moved.length} for ${back.length}`);
  for (const conn of moved) assert.deepEqual(conn.ips, [cluster.balancer.address]);
  for (const set of known) for (const conn of moved) set.add(conn.id);

  // New devices: C is down for nginx, every one is served by A or B.
  const newcomers = await Promise.all(Array.from({ length: 30 }, () => openRawPeer(cluster.balancer.coapPort, {
    address: '127.0.0.1', defaults: { timeoutMs: 2000, retries: 2 },
  })));
  rawPeers.push(...newcomers);
  const codes = await Promise.all(newcomers.map((peer) => peer.request(request).then((r) => r.code)));
  assert.deepEqual(codes, codes.map(() => '2.05'));
  const arrived = (await freshConnections(a, known[0])).length + (await freshConnections(b, known[1])).length;
  assert.equal(arrived, newcomers.length, 'one new connection on A or B per new device');
  assert.match(cluster.balancer.logs(), /upstream server temporarily disabled/, 'nginx says it marked C down');
});

test('stop() ends every process and removes every namespace, interface and lock of the cluster', { timeout: 60000 }, async () => {
  const { tag, hostLink } = cluster.network;
  const pids = [...cluster.nodes.map((n) => n.pid), cluster.redis.pid, cluster.balancer.pid];
  await cluster.stop();
  const alive = pids.filter((pid) => {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  });
  assert.deepEqual(alive, [], 'no node, redis or nginx process left');
  assert.ok(!fs.existsSync(cluster.balancer.dir), 'nginx\'s directory removed');
  assert.ok(!execFileSync('ps', ['-eo', 'args='], { encoding: 'utf8' }).includes(cluster.balancer.configFile), 'no nginx of this cluster left');
  assert.ok(!execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' }).includes(tag), 'no namespace left');
  assert.ok(!execFileSync('ip', ['-o', 'link', 'show'], { encoding: 'utf8' }).includes(hostLink), 'no veth left in the root namespace');
  assert.ok(!fs.existsSync(`/run/kuzzle-cluster/${cluster.network.prefix}`), 'subnet lock released');
});
