'use strict';

/*
 * The cluster's other load balancer (`balancer: 'nftables'`): nftables DNAT in the root namespace,
 * the option that keeps the device's own address (layout: cluster.js; needs Debian `nftables` and
 * `conntrack`).
 *
 *   device (root namespace)                       kernel, root namespace                     node i
 *   P.254:<its port> --UDP--> V:5683   --nat output hook: dnat to P.<11+i>-->   P.254:<its port> -> P.<11+i>:5683
 *   P.254:<its port> <--UDP-- V:5683   <--conntrack un-NATs the source-----     P.<11+i>:5683 -> P.254:<its port>
 *
 * - V = P.250, the virtual address: on no interface, only a destination. A datagram the root
 *   namespace sends to V:<CoAP port> (or a TCP connection to V:<HTTP port>) meets the nat chain
 *   of the table `ip <tag>` on the output hook, which rewrites its destination to one node's
 *   address (ports unchanged: every node has the same ports) and reroutes it through the root
 *   veth. conntrack remembers the choice: the device's next datagrams follow it, and what the node
 *   sends back (answers, notifications) has its source turned back into V:5683, so a device that
 *   talks to V hears from V. Only the destination is rewritten: a node sees each device at its own
 *   address and port (P.254:<port> for this machine's processes), in Kuzzle's connections and in
 *   what the plugin keys its per-device state by; and a device keeps that endpoint when it moves.
 *   No process, no port of our own: nothing to start, nothing to crash.
 * - Which node: `jhash ip saddr . udp sport mod B seed S map {bucket: node}` (TCP: tcp sport), a
 *   hash of the device's endpoint into B buckets; bucket b belongs to node b mod N. B is a multiple
 *   of N (N*(N-1) for small N) so that the buckets of a removed node are dealt out evenly among the
 *   live ones, and the seed is fixed for the run: rewriting the map for a failure moves only the
 *   devices of the failed node, and a device whose flow expired comes back to the same node.
 * - Flow lifetime: conntrack forgets an idle UDP flow after 30 s (unreplied) or 120 s (replied) by
 *   default; the device's next datagram would still be hashed to the same node, but a notification
 *   sent after the flow is gone leaves the node un-NATed, from the node's own address, and the
 *   device drops it. Observe relations stay quiet much longer (up to 3/4 of the plugin's Max-Age),
 *   so the UDP rule sets a `ct timeout` object of the table: 1 h, unreplied or replied, for these
 *   flows only (no machine-wide sysctl is touched).
 * - Health: none. DNAT does not see a node die; setNodes(liveIndexes) rewrites the map to the
 *   given nodes (one nft transaction) and deletes the flows that lead to the others (`conntrack
 *   -D`): their devices' next datagram is hashed again, to a live node, where it is a new endpoint
 *   (an Echo round trip, relations to register again). Flows to live nodes are
 *   kept: their devices stay where they are, even when the map would now send them elsewhere
 *   (after a node comes back, say).
 * - Only the root namespace's own traffic is balanced (the output hook): a device in another
 *   namespace would need a router in front (prerouting), and the nodes' answers would bypass it.
 *
 * Leftovers: the table is named after the run's tag (`ip kzc<pid><letter>`) and its comment names
 * V. stop() and a process exit (../cleanup.js) delete the table, the flows to V and the other flows
 * of the subnet; after a SIGKILL of the test process the next cluster start (removeDnatLeftovers)
 * deletes every table of a dead pid and the flows to its V. A flow outlives its table (it keeps
 * its DNAT binding for its timeout): left behind, it would send a later run's device that gets the
 * same subnet and port to an old choice of node; so start() too clears the subnet's flows. While
 * the table exists the root namespace tracks every connection (the nat chain turns conntrack on
 * there), the nodes' own and other runs' too (~22,000 flows of a concurrent benchmark once, with
 * nf_conntrack_max 262144): those carry no NAT and expire by themselves.
 */

const { execFileSync, spawnSync } = require('node:child_process');
const { randomInt } = require('node:crypto');
const { onProcessExit, isAlive } = require('../cleanup');
const { findExecutable } = require('../redis');
const { sleep } = require('../../support/util');
const { coapPing, tcpOpen } = require('./balancer');

const VIRTUAL_HOST_NUMBER = 250; // V = P.250
const UDP_TIMEOUT_S = 3600;
const MAX_BUCKETS = 1024;
const CHAIN = 'out';
const TIMEOUT_OBJECT = 'coap-udp';
const TABLE_RE = /^table ip (kzc(\d+)[a-z])$/; // a line of `nft list tables`
const COMMENT_RE = /virtual address (\d+\.\d+\.\d+\.\d+)/;

function tool(name) {
  const bin = findExecutable(name);
  if (!bin) throw new Error(`${name} is missing: apt-get install nftables conntrack (node test/system-packages.js does it as root)`);
  return bin;
}

/** nft with `args` (and a script on stdin); throws with nft's message. */
function nft(args, input) {
  try {
    return execFileSync(tool('nft'), args, { encoding: 'utf8', input, stdio: ['pipe', 'pipe', 'pipe'] });
  } catch (error) {
    throw new Error(`nft ${args.join(' ')}: ${(error.stderr || error.message).trim()}${input ? `\n--- script ---\n${input}` : ''}`);
  }
}

/**
 * conntrack -L or -D with filters; returns {lines, count}. (It exits 1 when nothing matched: not
 * an error here.)
 */
function conntrack(command, filters) {
  const run = spawnSync(tool('conntrack'), [command, ...filters], { encoding: 'utf8' });
  if (run.error) throw run.error;
  const count = run.stderr?.match(/(\d+) flow entries have been/)?.[1];
  if (count === undefined) throw new Error(`conntrack ${command} ${filters.join(' ')}: ${run.stderr || `exit ${run.status}`}`);
  return { lines: run.stdout.split('\n').filter(Boolean), count: Number(count) };
}

/** Deletes the flows sent to `virtualAddress` (and answered by `nodeAddress`, if given); returns how many. */
function forgetFlows(virtualAddress, nodeAddress) {
  return conntrack('-D', ['-d', virtualAddress, ...(nodeAddress ? ['-r', nodeAddress] : [])]).count;
}

/**
 * Deletes every flow from or to the subnet <prefix>.0/24 (V's included); returns how many. While
 * the table exists the root namespace tracks connections, the nodes' own (untranslated) ones too: a
 * run leaves none behind, and clears what a crashed run of the same subnet left, since an old
 * untranslated flow P.254:port <-> P.<11+i> has the reply tuple of a new DNAT flow from the same
 * port (the kernel then gives the new one another source port: the node would not see the device's own).
 */
function forgetSubnetFlows(prefix) {
  const mask = (side) => [`--orig-${side}`, `${prefix}.0`, `--mask-${side}`, '255.255.255.0'];
  return conntrack('-D', mask('src')).count + conntrack('-D', mask('dst')).count;
}

/** The number of buckets for `count` nodes: a multiple of it, so that each node owns the same share. */
const bucketCount = (count) => count * Math.max(1, Math.min(count - 1, Math.floor(MAX_BUCKETS / count)));

/**
 * Node index of each bucket: bucket b is node b mod count's while it is live; the buckets of the
 * other nodes are dealt out to the live ones in turn. Empty when no node is live.
 */
function bucketOwners(buckets, count, live) {
  if (live.length === 0) return [];
  const alive = new Set(live);
  const spare = [...alive].sort((x, y) => x - y);
  let turn = 0;
  return Array.from({ length: buckets }, (_, b) => (alive.has(b % count) ? b % count : spare[turn++ % spare.length]));
}

/**
 * The nft script that creates the table (if missing) and (re)writes its rules for the live nodes,
 * in one transaction (exported for the report and the tests).
 *
 * @param {object} c
 * @param {string} c.tag table name (the run's tag)
 * @param {string} c.virtualAddress V
 * @param {string[]} c.addresses the nodes' addresses, by index
 * @param {number} c.coapPort UDP port, on V and on every node
 * @param {number|null} c.httpPort TCP port, on V and on every node (null: no HTTP rule)
 * @param {number} c.buckets
 * @param {number} c.seed jhash seed
 * @param {number[]} c.live indexes of the nodes that get devices
 */
function nftScript({ tag, virtualAddress, addresses, coapPort, httpPort, buckets, seed, live }) {
  const owners = bucketOwners(buckets, addresses.length, live);
  const map = `map { ${owners.map((node, b) => `${b} : ${addresses[node]}`).join(', ')} }`;
  const hash = (proto) => `jhash ip saddr . ${proto} sport mod ${buckets} seed 0x${seed.toString(16)}`;
  const rules = owners.length === 0 ? [] : [
    `add rule ip ${tag} ${CHAIN} ip daddr ${virtualAddress} udp dport ${coapPort} ct timeout set "${TIMEOUT_OBJECT}" dnat to ${hash('udp')} ${map}`,
    ...(httpPort ? [`add rule ip ${tag} ${CHAIN} ip daddr ${virtualAddress} tcp dport ${httpPort} dnat to ${hash('tcp')} ${map}`] : []),
  ];
  return `table ip ${tag} {
  comment "Kuzzle test cluster ${tag}: DNAT balancer (test/kuzzle-host/cluster/dnat.js), virtual address ${virtualAddress}"
  # UDP flows to the nodes outlive an observe relation's quiet time.
  ct timeout ${TIMEOUT_OBJECT} {
    protocol udp
    l3proto ip
    policy = { unreplied : ${UDP_TIMEOUT_S}, replied : ${UDP_TIMEOUT_S} }
  }
  chain ${CHAIN} {
    type nat hook output priority -100; policy accept;
  }
}
flush chain ip ${tag} ${CHAIN}
${rules.join('\n')}
`;
}

/**
 * Deletes the DNAT tables of crashed runs (their pid is dead) and the flows to their virtual
 * address. Returns what was removed.
 */
function removeDnatLeftovers() {
  if (!findExecutable('nft') || !findExecutable('conntrack')) return []; // nothing of ours can exist
  const removed = [];
  for (const line of nft(['list', 'tables']).split('\n')) {
    const [, table, pid] = line.trim().match(TABLE_RE) ?? [];
    if (!table || Number(pid) === process.pid || isAlive(Number(pid))) continue;
    let virtualAddress = null;
    try {
      virtualAddress = nft(['list', 'table', 'ip', table]).match(COMMENT_RE)?.[1] ?? null;
      nft(['delete', 'table', 'ip', table]);
    } catch (error) {
      // Gone meanwhile: another cluster start removed it (and its flows).
      if (!/No such file or directory/.test(error.message)) removed.push(`could not delete nft table ip ${table}: ${error.message}`);
      continue;
    }
    removed.push(`nft table ip ${table}`);
    if (virtualAddress) removed.push(`${forgetFlows(virtualAddress)} conntrack flow(s) to ${virtualAddress}`);
  }
  return removed;
}

/**
 * Starts the DNAT balancer in front of the nodes; resolves once a CoAP ping and a TCP connection
 * through it are answered.
 *
 * @param {object} spec
 * @param {object} spec.net the cluster's network (netns.js createNetwork: tag, prefix, hostAddress)
 * @param {{address: string, coapPort: number, httpPort: number}[]} spec.nodes the same ports on every node
 * @param {number} [spec.virtualHostNumber=250] V = <prefix>.<it>
 * @param {number} [spec.bootTimeout=10000] ms
 * @returns {Promise<object>} {kind: 'nftables', coapUrl, httpUrl, address, setNodes(), flows(), stop(), ...}
 */
async function startDnatBalancer({ net: network, nodes, virtualHostNumber = VIRTUAL_HOST_NUMBER, bootTimeout = 10000 }) {
  const began = Date.now();
  tool('nft');
  tool('conntrack');
  const [{ coapPort, httpPort }] = nodes;
  if (nodes.some((n) => n.coapPort !== coapPort || n.httpPort !== httpPort)) {
    throw new Error(`the DNAT balancer keeps the ports: every node needs the same ones, got ${JSON.stringify(nodes)}`);
  }
  const { tag } = network;
  const virtualAddress = `${network.prefix}.${virtualHostNumber}`;
  const addresses = nodes.map((n) => n.address);
  const buckets = bucketCount(nodes.length);
  const seed = randomInt(2 ** 31);
  const script = (live) => nftScript({ tag, virtualAddress, addresses, coapPort, httpPort, buckets, seed, live });
  const events = [];
  const note = (text) => events.push(`${new Date().toISOString()} ${text}`);

  let live = nodes.map((_, i) => i);
  let stopped = false;
  const remove = () => {
    try {
      nft(['delete', 'table', 'ip', tag]);
    } catch {
      // already gone
    }
    return forgetSubnetFlows(network.prefix);
  };
  // The subnet is ours now: flows of a crashed run that had it would mislead our devices.
  const stale = forgetSubnetFlows(network.prefix);
  const removeHook = onProcessExit(remove);
  try {
    nft(['-f', '-'], script(live));
    note(`table ip ${tag}: ${virtualAddress} -> nodes ${live.join(', ')} (${buckets} buckets)${stale ? `; ${stale} stale flow(s) deleted` : ''}`);
    const deadline = Date.now() + bootTimeout;
    let ready = false;
    while (!ready && Date.now() < deadline) {
      ready = (await coapPing(coapPort, 500, virtualAddress)) && (await tcpOpen(httpPort, virtualAddress));
      if (!ready) await sleep(100);
    }
    if (!ready) throw new Error(`no answer through ${virtualAddress} within ${bootTimeout} ms\n${nft(['list', 'table', 'ip', tag])}`);
  } catch (error) {
    remove();
    removeHook();
    throw new Error(`the nftables DNAT balancer did not start: ${error.message}`);
  }

  /** Current flows to V: [{protocol, state, timeout (s left), source, sport, nodeAddress, node (index)}]. */
  const flows = () => conntrack('-L', ['-d', virtualAddress]).lines.map((line) => {
    const [, protocol, timeout] = line.match(/^(\w+)\s+\d+\s+(\d+)/) ?? [];
    const sources = [...line.matchAll(/src=(\S+)/g)].map((m) => m[1]);
    const sport = Number(line.match(/sport=(\d+)/)?.[1]);
    const state = line.match(/^\w+\s+\d+\s+\d+\s+([A-Z_]+)\s/)?.[1] ?? null;
    return { protocol, state, timeout: Number(timeout), source: sources[0], sport, nodeAddress: sources[1], node: addresses.indexOf(sources[1]) };
  });

  return {
    kind: 'nftables',
    /** The nftables table (`nft list table ip <tag>`). */
    table: `ip ${tag}`,
    /** V: where devices send (on no interface). */
    host: virtualAddress,
    /** The address a node sees for a device of the root namespace: the device's own (DNAT keeps it). */
    address: network.hostAddress,
    coapPort,
    httpPort,
    coapUrl: `coap://${virtualAddress}:${coapPort}`,
    /** Kuzzle's HTTP API through DNAT (a TCP connection sticks to the node its endpoint hashes to). */
    httpUrl: `http://${virtualAddress}:${httpPort}`,
    /** No loopback ports: the nodes' own HTTP URLs work from the root namespace. */
    nodeHttpUrls: nodes.map(() => null),
    /** Seconds an idle UDP flow (device endpoint -> node) is kept (the table's ct timeout object). */
    udpTimeout: UDP_TIMEOUT_S,
    buckets,
    seed,
    /** Indexes of the nodes that new flows go to. */
    get liveNodes() { return [...live]; },
    /** ms from startDnatBalancer() to the first answers through V */
    startMs: Date.now() - began,
    isRunning: () => !stopped,
    flows,
    /** The table as nft lists it. */
    ruleset: () => (stopped ? '' : nft(['list', 'table', 'ip', tag])),
    /** What the balancer did (start, setNodes), then its table. */
    logs: () => `${events.join('\n')}\n${stopped ? '(stopped)' : nft(['list', 'table', 'ip', tag])}`,
    /**
     * Sends new flows to the nodes `liveIndexes` only (possibly none: then V answers nothing), in
     * one nft transaction, then deletes the flows that lead to the other nodes, so that their
     * devices' next datagram goes to a live node. Flows to live nodes are kept. Idempotent; call
     * it again with a node that is back to give it new devices. After stop(), it does nothing.
     *
     * @param {number[]} liveIndexes node indexes
     * @returns {Promise<void>}
     */
    async setNodes(liveIndexes) {
      const wanted = [...new Set(liveIndexes)].sort((x, y) => x - y);
      if (!wanted.every((i) => Number.isInteger(i) && i >= 0 && i < nodes.length)) {
        throw new Error(`setNodes: node indexes from 0 to ${nodes.length - 1}, got ${JSON.stringify(liveIndexes)}`);
      }
      if (stopped) return; // e.g. a watchdog that acts while the cluster stops
      nft(['-f', '-'], script(wanted));
      live = wanted;
      // After the new map: a datagram of a deleted flow can only make a flow to a live node.
      const deleted = addresses.map((address, i) => (wanted.includes(i) ? 0 : forgetFlows(virtualAddress, address)));
      note(`setNodes([${wanted.join(', ')}]): flows deleted per node ${deleted.join(', ')}`);
    },
    /** Deletes the table, every flow to V and every other flow of the subnet. */
    async stop() {
      if (stopped) return;
      stopped = true;
      const deleted = remove();
      removeHook();
      note(`stopped; ${deleted} flow(s) deleted`);
    },
  };
}

module.exports = { startDnatBalancer, removeDnatLeftovers, nftScript, bucketOwners, bucketCount, conntrack };
