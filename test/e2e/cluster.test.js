'use strict';
/**
 * The CoAP plugin in a real 3-node Kuzzle 2.56 cluster (test/kuzzle-host/cluster: one network
 * namespace per node, a shared Redis and a shared in-memory storage; needs root). One cluster for
 * the file: nodes A, B, C. A coap-client-notls device observes a collection through node A;
 * documents are written over HTTP on nodes B and C; the device must get each one exactly once.
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
const { sleep } = require('../support/util');
const { kuzzleHttp, lineJson, waitUntil } = require('./helpers');

const INDEX = 'cluster';
const WRITES_PER_NODE = 5;

let cluster;
let a;
let b;
let c;

before(async () => {
  cluster = await startKuzzleCluster({ nodes: 3 });
  [a, b, c] = cluster.nodes;
  for (const node of cluster.nodes) node.http = kuzzleHttp(node);
  await b.http.ok({ controller: 'index', action: 'create', index: INDEX });
}, { timeout: 180000 });

after(async () => {
  await killAll();
  await cluster?.stop();
}, { timeout: 60000 });

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

  const client = spawnCoapClient(['-s', '80', '-B', '85', '-w', '-A', '50', '-m', 'get',
    `coap://${a.address}:${a.coapPort}/api/realtime/subscribe?index=${INDEX}&collection=${collection}`]);
  try {
    const registration = lineJson(await client.waitLine((l) => l.stream === 'stdout' && l.text.includes('"roomId"'), 10000));
    assert.equal(registration.status, 200);
    const { roomId } = registration.result;

    // The room reaches B and C through the cluster: write only once they know it.
    for (const node of [a, b, c]) {
      const known = await waitUntil(async () => (await node.http.api({ controller: 'realtime', action: 'count', body: { roomId } })).result?.count === 1, 10000);
      assert.ok(known, `node ${node.index} counts the subscription`);
    }

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

test('stop() ends every process and removes every namespace, interface and lock of the cluster', { timeout: 60000 }, async () => {
  const { tag, hostLink } = cluster.network;
  const pids = [...cluster.nodes.map((n) => n.pid), cluster.redis.pid];
  await cluster.stop();
  const alive = pids.filter((pid) => {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  });
  assert.deepEqual(alive, [], 'no node or redis process left');
  assert.ok(!execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' }).includes(tag), 'no namespace left');
  assert.ok(!execFileSync('ip', ['-o', 'link', 'show'], { encoding: 'utf8' }).includes(hostLink), 'no veth left in the root namespace');
  assert.ok(!fs.existsSync(`/run/kuzzle-cluster/${cluster.network.prefix}`), 'subnet lock released');
});
