'use strict';

/*
 * A real Kuzzle 2.56 cluster on this machine, each node with the CoAP plugin of this project,
 * for end-to-end tests. Needs root.
 *
 *   const { startKuzzleCluster } = require('./test/kuzzle-host/cluster');
 *   const cluster = await startKuzzleCluster({ nodes: 3, coap: { ... } });
 *   fetch(`${cluster.nodes[1].url}/_query`) ... coap-client coap://<cluster.nodes[0].address>/...
 *   await cluster.stop();
 *
 * Why namespaces: a Kuzzle node advertises the first non-internal IPv4 address of its machine
 * (RFC 1918 with `cluster.ip: "private"`) and reaches its peers at <peer IP>:<its own ports>
 * (7510/7511): every node needs its own, non-loopback address and the same ports. So each node
 * runs in a network namespace of its own.
 *
 * Network layout. T = the run's tag "kzc<pid><letter>" (e.g. kzc4242a), P = the run's subnet
 * 10.200.<k> (k reserved per run, netns.js). Interface names are T + suffix (kzc4242ah, ...).
 *
 *   root namespace (test process)      namespace T-br (the switch)         namespace T-n<i>, i = 0..N-1
 *   +-----------------------------+    +------------------------------+    +-----------------------------+
 *   | veth T+"h"  P.254/24  ------+----+-- veth T+"hb" --+            |    |                             |
 *   |                             |    |                 |            |    |                             |
 *   | storage server (this        |    |  bridge T+"br"  P.1/24       |    |  eth0  P.<11+i>/24          |
 *   |   process) P.254:9200       |    |                 |            |    |    |                        |
 *   | coap-client, fetch, ...     |    |  veth T+"n<i>" -+------------+----+----+                        |
 *   |                             |    |                              |    |  Kuzzle node i (child.js):  |
 *   |                             |    |  redis-server P.1:6379       |    |   HTTP 7512/tcp             |
 *   |                             |    |   (--protected-mode no)      |    |   CoAP 5683/udp (plugin)    |
 *   +-----------------------------+    +------------------------------+    |   cluster 7510, 7511/tcp    |
 *                                                                          |   + Kuzzle's ID card renewer|
 *                                                                          +-----------------------------+
 *
 * - The test process reaches node i directly at P.<11+i> (HTTP http://P.<11+i>:7512, CoAP
 *   coap://P.<11+i>:5683) through the root veth T+"h" and the bridge: no forwarder, no NAT, no
 *   routing (one L2 segment, the connected route of P.0/24 in the root namespace). A device seen
 *   by a node has its real source address (P.254 for the test process).
 * - The nodes reach Redis at P.1:6379 and the storage at http://P.254:9200 (Kuzzle's own ES 7
 *   client, `services.storageEngine.client.node`), each other at P.<11+j>:7510/7511.
 * - The load balancer (option `balancer: 'nginx'`, balancer.js) runs in the root namespace:
 *   nginx's stream module listens on 127.0.0.1 (CoAP over UDP, and HTTP over TCP, round robin,
 *   plus one loopback HTTP port per node) and proxies to the nodes' addresses from P.253 (added
 *   to the root veth T+"h" for it, `proxy_bind`): a node sees every device behind nginx as
 *   P.253:<one nginx port per device session>, and the test process' direct traffic as P.254.
 *   Devices stick to a node by `hash $remote_addr$remote_port consistent`; a node that answers
 *   with ICMP port unreachable (dead) is skipped for fail_timeout. `cluster.balancer.coapUrl`,
 *   `.httpUrl`, `.nodeHttpUrls[i]`.
 *   With `balancer: 'nftables'` (dnat.js) no proxy but a table of nftables rules in the root
 *   namespace: UDP (and TCP) that it sends to the virtual address P.250 is DNATed to one node,
 *   chosen by a hash of the device's address and port (`jhash ip saddr . udp sport`), and conntrack
 *   turns the answers' source back into P.250: a node sees each device at its own address (P.254
 *   for the test process). UDP flows live 1 h (a ct timeout object of the table). No health
 *   checks: the cluster calls `balancer.setNodes(liveIndexes)` when a node exits or is restarted,
 *   which sends the devices of a node that is gone elsewhere.
 *
 * Processes: redis-server (in T-br), one ../child.js per node (in T-n<i>; Kuzzle forks its ID card
 * renewer there too), nginx (root namespace, a process group of its own, when asked); the storage
 * server is an HTTP server in this process. Teardown kills
 * everything in the namespaces, then removes them (and the veth, the bridge, the subnet lock);
 * a process exit (even by SIGINT/SIGTERM) does it synchronously through ../cleanup.js. After a
 * SIGKILL of this process the nodes exit by themselves (IPC disconnect, within ~15 s) and the
 * rest (Redis, nginx, namespaces, veth, lock, Redis' and nginx's directories) is removed by the next
 * start, which removes every "kzc<dead pid>..." namespace, veth, directory and lock, ends the
 * nginx process group named in a dead run's directory, and deletes a dead run's nftables table
 * and its conntrack flows.
 *
 * Every node runs ./node-setup.js as its Kuzzle application setup (then options.appSetup): it
 * lets `cluster.nodes[i].connections('coap')` list Kuzzle's client connections with their ips.
 */

const fs = require('node:fs');
const path = require('node:path');
const { onProcessExit, kill } = require('../cleanup');
const { linkProtocol, projectRoot } = require('..');
const { createNetwork, removeLeftovers, namespacePids, isRoot } = require('./netns');
const { startStorageServer } = require('./storage-server');
const { spawnRedis } = require('../redis');
const { startNode } = require('./node');
const { startBalancer, removeBalancerLeftovers } = require('./balancer');
const { startDnatBalancer, removeDnatLeftovers } = require('./dnat');
const { startWatchdog } = require('./watchdog');
const { CONNECTIONS } = require('./node-setup');

const HTTP_PORT = 7512;
const COAP_PORT = 5683;
const STORAGE_PORT = 9200;
const REDIS_PORT = 6379; // free: the bridge namespace is fresh

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** RSS (bytes) of a pid, 0 if gone. */
function rssOf(pid) {
  try {
    const kb = Number(fs.readFileSync(`/proc/${pid}/status`, 'utf8').match(/^VmRSS:\s+(\d+)/m)?.[1] || 0);
    return kb * 1024;
  } catch {
    return 0;
  }
}

const tail = (text, n = 6000) => (text.length > n ? `...${text.slice(-n)}` : text);

/**
 * Starts a Kuzzle cluster: network (netns.js), storage server, Redis, then node 0 alone (it
 * creates Kuzzle's internal index), then the other nodes together; resolves once every node's
 * `cluster:status` counts all nodes.
 *
 * @param {object} [options]
 * @param {number} [options.nodes=3]
 * @param {object} [options.coap] merged over server.protocols.coap of every node (default host 0.0.0.0, port 5683)
 * @param {object} [options.cluster] merged over Kuzzle's cluster section (enabled: true always)
 * @param {string} [options.logLevel] Kuzzle's server.appLogs.level
 * @param {string} [options.appSetup] module path `(app) => void|Promise`, run on every node's Backend before start
 * @param {string} [options.protocolDir] directory installed as the coap protocol (default: the project root)
 * @param {boolean} [options.verbose] nodes' output on this process' output (default KUZZLE_HOST_VERBOSE=1)
 * @param {number} [options.bootTimeout=90000] ms, per node and for the cluster to form
 * @param {'nginx'|'nftables'|boolean|object} [options.balancer] in front of the nodes: nginx (balancer.js),
 *   'nginx' or true, or {kind: 'nginx', proxyTimeout: '1h', maxFails: 1, failTimeout: '120s'}; or
 *   nftables DNAT (dnat.js, devices keep their address), 'nftables' or {kind: 'nftables'}; default none
 * @param {boolean|object} [options.watchdog] a liveness probe that kills a node which stops answering
 *   (watchdog.js): true or {intervalMs: 1000, timeoutMs: 1000, failures: 3}; default on with a balancer
 */
async function startKuzzleCluster(options = {}) {
  if (!isRoot()) {
    throw new Error('startKuzzleCluster needs root: it creates network namespaces, veth pairs and a bridge (run the tests as root)');
  }
  const began = Date.now();
  const count = options.nodes ?? 3;
  if (!Number.isInteger(count) || count < 1 || count > 200) throw new Error(`nodes: 1..200, got ${options.nodes}`);
  const verbose = options.verbose ?? process.env.KUZZLE_HOST_VERBOSE === '1';
  const bootTimeout = options.bootTimeout ?? 90000;
  linkProtocol(path.resolve(options.protocolDir ?? projectRoot));

  const balancerOptions = options.balancer === true ? { kind: 'nginx' }
    : typeof options.balancer === 'string' ? { kind: options.balancer }
      : options.balancer && typeof options.balancer === 'object' ? { kind: 'nginx', ...options.balancer } : null;
  if (options.balancer && !['nginx', 'nftables'].includes(balancerOptions?.kind)) {
    throw new Error(`balancer: 'nginx', 'nftables', true or an object, got ${JSON.stringify(options.balancer)}`);
  }
  const leftovers = [...removeBalancerLeftovers(), ...removeDnatLeftovers(), ...removeLeftovers()];
  const net = createNetwork({ nodes: count });
  let storage = null;
  let redis = null;
  let balancer = null;
  let watchdog = null;
  const handles = new Array(count).fill(null); // startNode() results; replaced by restartNode()

  const removeHook = onProcessExit(() => {
    for (const handle of handles) if (handle) kill(handle.pid, 'SIGKILL');
    net.remove(); // SIGKILLs whatever is left in the namespaces, removes them
  });

  let stopping = null;
  const stop = () => {
    stopping ??= (async () => {
      watchdog?.stop();
      await balancer?.stop();
      // Nodes first (they leave the cluster through Redis), gracefully, all together.
      await Promise.all(handles.map((handle) => handle?.stop(10000)));
      await redis?.stop();
      await storage?.stop();
      // What Kuzzle left behind (its ID card renewer): killed, then gone with the namespaces.
      const namespaces = [...net.nodes.map((n) => n.ns), net.bridgeNs];
      for (const ns of namespaces) for (const pid of namespacePids(ns)) kill(pid, 'SIGKILL');
      for (let waited = 0; waited < 5000 && namespaces.some((ns) => namespacePids(ns).length); waited += 50) await sleep(50);
      net.remove();
      removeHook();
    })();
    return stopping;
  };

  const nodeOptions = () => ({
    appName: 'kuzzle-coap-cluster',
    port: HTTP_PORT,
    coap: { host: '0.0.0.0', port: COAP_PORT, ...options.coap },
    cluster: { ...options.cluster, enabled: true },
    logLevel: options.logLevel,
    appSetup: path.join(__dirname, 'node-setup.js'), // then options.appSetup (KUZZLE_CLUSTER_APP_SETUP)
    redis: { host: redis.host, port: redis.port },
    elasticsearchUrl: storage.url,
  });
  const appSetup = options.appSetup ? path.resolve(options.appSetup) : '';
  /** Tells a balancer without health checks of its own (DNAT) which nodes run; nginx finds out itself. */
  const syncBalancer = () => balancer?.setNodes?.(nodes.filter((n) => n.isRunning()).map((n) => n.index));
  const boot = async (i) => {
    const handle = await startNode({
      ns: net.nodes[i].ns, options: nodeOptions(), verbose, label: `node${i}`, bootTimeout, env: { KUZZLE_CLUSTER_APP_SETUP: appSetup },
    });
    handles[i] = handle;
    handle.exited.then(() => (handles[i] === handle ? syncBalancer() : undefined)).catch(() => {});
    return handle;
  };

  const nodes = net.nodes.map((spec, i) => ({
    index: i,
    ns: spec.ns,
    address: spec.address,
    httpPort: HTTP_PORT,
    /** Kuzzle's HTTP API (also `url`, as the single-node host names it) */
    httpUrl: `http://${spec.address}:${HTTP_PORT}`,
    url: `http://${spec.address}:${HTTP_PORT}`,
    coapHost: spec.address,
    get coapPort() { return handles[i]?.ready.coapPort ?? null; },
    get coapUrl() { return `coap://${spec.address}:${this.coapPort}`; },
    get pid() { return handles[i]?.pid ?? null; },
    get exited() { return handles[i]?.exited; },
    isRunning: () => handles[i]?.isRunning() ?? false,
    logs: () => handles[i]?.logs() ?? '',
    query: (req) => handles[i].query(req),
    ask: (event, ...args) => handles[i].ask(event, ...args),
    coapStats: () => handles[i].coapStats(),
    /** Kuzzle's client connections on this node ([{id, protocol, ips}]), of `protocol` if given. */
    connections: (protocol) => handles[i].ask(CONNECTIONS, protocol),
    /** This node's HTTP API on 127.0.0.1 (through the balancer's nginx; null without it). */
    get loopbackHttpUrl() { return balancer?.nodeHttpUrls[i] ?? null; },
  }));

  /** `cluster:status` as node i sees it (activeNodes, nodes[{id, address, birthdate}], activity). */
  const status = async (i = 0) => (await nodes[i].query({ controller: 'cluster', action: 'status' })).result;

  /** Waits until every running node counts `expected` nodes; returns the last statuses. */
  const waitForNodes = async (expected, ms = 30000) => {
    const deadline = Date.now() + ms;
    let last = [];
    for (;;) {
      const running = nodes.filter((n) => n.isRunning());
      last = await Promise.all(running.map((n) => status(n.index).catch((error) => ({ error: error.message }))));
      if (last.every((s) => s.activeNodes === expected)) return last;
      if (Date.now() > deadline) {
        throw new Error(`the cluster did not reach ${expected} nodes in ${ms} ms: ${JSON.stringify(last.map((s) => s.activeNodes ?? s.error))}`);
      }
      await sleep(200);
    }
  };

  const logs = (i) => (i === undefined
    ? nodes.map((n) => `--- node ${n.index} (${n.address}) ---\n${n.logs()}`).join('\n')
    : nodes[i].logs());

  try {
    storage = await startStorageServer({ host: net.hostAddress, port: STORAGE_PORT });
    redis = await spawnRedis({
      namespace: net.bridgeNs,
      host: net.bridgeAddress,
      port: REDIS_PORT,
      // The nodes connect from other namespaces: protected mode would refuse them (Kuzzle then
      // dies with "write EPIPE").
      protectedMode: false,
      // Named after the run's tag: removeLeftovers() (netns.js) removes a crashed run's directory.
      dirPrefix: `${net.tag}-redis-`,
    });
    await boot(0);
    await Promise.all(nodes.slice(1).map((n) => boot(n.index)));
    await waitForNodes(count, bootTimeout);
    if (balancerOptions) {
      const { kind, ...rest } = balancerOptions;
      const startKind = kind === 'nftables' ? startDnatBalancer : startBalancer;
      balancer = await startKind({ ...rest, net, nodes: nodes.map((n) => ({ address: n.address, coapPort: n.coapPort, httpPort: n.httpPort })) });
    }
    const watchdogOptions = options.watchdog === true || (options.watchdog === undefined && balancer) ? {}
      : options.watchdog && typeof options.watchdog === 'object' ? options.watchdog : null;
    if (watchdogOptions) {
      watchdog = startWatchdog({
        ...watchdogOptions,
        nodes,
        // Fencing: a hung node becomes a dead one, which the balancer skips (watchdog.js).
        onUnhealthy: async (i, reason) => {
          console.error(`[cluster ${net.tag}] node ${i} killed by the watchdog: ${reason}`);
          await handles[i]?.kill('SIGKILL');
        },
      });
    }
  } catch (error) {
    const nodeLogs = error.logs ?? logs();
    await stop();
    error.message = `Kuzzle cluster did not start: ${error.message}${nodeLogs.trim() ? `\n--- Kuzzle output (end) ---\n${tail(nodeLogs.trim(), 12000)}` : ''}`;
    throw error;
  }

  return {
    nodes,
    network: net,
    storage,
    redis,
    /**
     * The balancer, or null: nginx (balancer.js: kind 'nginx', coapUrl, httpUrl, nodeHttpUrls, address,
     * logs(), sessions()) or nftables DNAT (dnat.js: kind 'nftables', coapUrl, httpUrl, address,
     * setNodes(liveIndexes), flows(), logs()).
     */
    get balancer() { return balancer; },
    /** The liveness probe (watchdog.js: events, intervalMs, timeoutMs, failures), or null. */
    get watchdog() { return watchdog; },
    leftoversRemoved: leftovers,
    bootMs: Date.now() - began,
    status,
    waitForNodes,
    /**
     * Sends `signal` to node i's Kuzzle process (default SIGKILL: a crash); for a terminating
     * signal, resolves once it has exited. SIGSTOP/SIGCONT just send.
     */
    killNode: (i, signal = 'SIGKILL') => handles[i]?.kill(signal),
    /** Starts node i again in its namespace (after killNode); resolves when it is ready. */
    restartNode: async (i) => {
      if (nodes[i].isRunning()) throw new Error(`node ${i} is still running`);
      for (const pid of namespacePids(net.nodes[i].ns)) kill(pid, 'SIGKILL'); // a renewer left behind
      await boot(i);
      await syncBalancer();
      return nodes[i];
    },
    /** Node i's Kuzzle output (all nodes' if i is undefined). */
    logs,
    /** RSS in bytes: per node (every process of its namespace: Kuzzle and its ID card renewer), Redis. */
    memory: () => ({
      nodes: nodes.map((n) => namespacePids(n.ns).reduce((sum, pid) => sum + rssOf(pid), 0)),
      redis: redis ? rssOf(redis.pid) : 0,
    }),
    stop,
  };
}

module.exports = { startKuzzleCluster };
