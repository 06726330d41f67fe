'use strict';

/*
 * The network of one test cluster (layout: see cluster.js): network namespaces, a bridge,
 * veth pairs, addresses. Everything is done with iproute2 (`ip`), synchronously (a few ms per
 * command): the exit hooks that undo it must be synchronous anyway.
 *
 * Names carry the run's tag `kzc<pid><letter>` (the letter counts the clusters of one process),
 * so that parallel runs never collide and a crashed run's leftovers are recognised by their dead
 * pid. The subnet 10.200.<k>.0/24 is reserved by a lock file /run/kuzzle-cluster/10.200.<k>
 * holding the pid (and is skipped while the root namespace has a route or address in it).
 *
 * In the root namespace only one thing is added: the veth `<tag>h` with the address
 * 10.200.<k>.254/24 (hence a connected route to that /24): the test process reaches the nodes
 * through it, and the nodes reach the storage server listening there. No other host interface,
 * route, sysctl or firewall rule is touched.
 */

const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { isAlive } = require('../cleanup');
const { findExecutable } = require('../redis');

const PREFIX = 'kzc';
const LOCK_DIR = '/run/kuzzle-cluster';
const SUBNET_BASE = '10.200';
// <tag> = kzc<pid><letter>: namespaces "<tag>-br", "<tag>-n<i>"; root veth "<tag>h".
const TAG_RE = new RegExp(`^${PREFIX}(\\d+)[a-z]`);

const ipBin = findExecutable('ip');

function ip(...args) {
  if (!ipBin) throw new Error('iproute2 (`ip`) not found: apt-get install iproute2');
  try {
    return execFileSync(ipBin, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (error) {
    throw new Error(`ip ${args.join(' ')}: ${(error.stderr || error.message).trim()}`);
  }
}

/** Like ip(), ignoring failures (teardown: the thing may already be gone). */
function ipQuiet(...args) {
  try {
    return ip(...args);
  } catch {
    return '';
  }
}

const isRoot = () => process.getuid?.() === 0;

/** Pids of the processes inside namespace `ns` (empty if the namespace is gone). */
function namespacePids(ns) {
  return ipQuiet('netns', 'pids', ns).split(/\s+/).filter(Boolean).map(Number);
}

/** SIGKILLs every process of `ns`, then removes the namespace (its interfaces go with it). */
function destroyNamespace(ns) {
  for (const pid of namespacePids(ns)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  ipQuiet('netns', 'del', ns);
}

const listNamespaces = () => ipQuiet('netns', 'list').split('\n').map((l) => l.trim().split(/\s+/)[0]).filter(Boolean);
const listRootLinks = () => ipQuiet('-o', 'link', 'show').split('\n')
  .map((l) => l.match(/^\d+:\s+([^:@\s]+)/)?.[1]).filter(Boolean);

/**
 * Removes what crashed earlier runs left (their pid is dead): processes in their namespaces,
 * the namespaces, their root veth, their temporary directories (<tmp>/<tag>-*), their subnet
 * locks. Returns what was removed.
 */
function removeLeftovers() {
  const removed = [];
  const dead = (name) => {
    const pid = Number(name.match(TAG_RE)?.[1]);
    return pid > 0 && pid !== process.pid && !isAlive(pid);
  };
  for (const ns of listNamespaces().filter(dead)) {
    destroyNamespace(ns);
    removed.push(`netns ${ns}`);
  }
  for (const link of listRootLinks().filter(dead)) {
    ipQuiet('link', 'del', link);
    removed.push(`link ${link}`);
  }
  for (const entry of fs.readdirSync(os.tmpdir()).filter(dead)) { // e.g. Redis' directory (<tag>-redis-*)
    fs.rmSync(path.join(os.tmpdir(), entry), { recursive: true, force: true });
    removed.push(`dir ${entry}`);
  }
  let locks = [];
  try {
    locks = fs.readdirSync(LOCK_DIR);
  } catch {
    // no lock directory yet
  }
  for (const file of locks) {
    const pid = Number(readLock(path.join(LOCK_DIR, file)));
    if (pid > 0 && pid !== process.pid && !isAlive(pid)) {
      fs.rmSync(path.join(LOCK_DIR, file), { force: true });
      removed.push(`lock ${file}`);
    }
  }
  return removed;
}

function readLock(file) {
  try {
    return fs.readFileSync(file, 'utf8').trim();
  } catch {
    return '';
  }
}

/** Reserves a free 10.200.<k>.0/24 (lock file with our pid); returns {prefix, release()}. */
function reserveSubnet() {
  fs.mkdirSync(LOCK_DIR, { recursive: true });
  const used = ipQuiet('-4', '-o', 'addr', 'show') + ipQuiet('-4', 'route', 'show', 'table', 'all');
  const start = process.pid % 250;
  for (let n = 0; n < 250; n++) {
    const k = 1 + ((start + n) % 250);
    const prefix = `${SUBNET_BASE}.${k}`;
    if (used.includes(`${prefix}.`)) continue;
    const file = path.join(LOCK_DIR, prefix);
    try {
      fs.writeFileSync(file, String(process.pid), { flag: 'wx' });
    } catch (error) {
      if (error.code !== 'EEXIST') throw error;
      const owner = Number(readLock(file));
      if (owner > 0 && isAlive(owner)) continue;
      fs.rmSync(file, { force: true }); // a dead run's lock: take it over
      try {
        fs.writeFileSync(file, String(process.pid), { flag: 'wx' });
      } catch {
        continue; // someone else took it just now
      }
    }
    return { prefix, release: () => fs.rmSync(file, { force: true }) };
  }
  throw new Error(`no free ${SUBNET_BASE}.<k>.0/24 subnet`);
}

let clusterCount = 0;

/**
 * Creates the network of a cluster of `nodes` nodes. Synchronous; on failure, whatever was
 * created is removed before the error is thrown.
 *
 * @returns {{tag, prefix, bridgeNs, bridge, bridgeAddress, hostLink, hostAddress,
 *   nodes: {ns, link, address}[], attach(name, hostNumber): {ns, link, address}, remove(): void}}
 *   attach() adds one more namespace on the bridge ("<tag>-<name>", address <prefix>.<hostNumber>,
 *   interface eth0), e.g. for a load balancer; remove() removes it too. addHostAddress(hostNumber)
 *   adds <prefix>.<hostNumber>/32 to the root veth (a second source address for a process of the
 *   root namespace, e.g. nginx's `proxy_bind`); it goes with the veth.
 */
function createNetwork({ nodes }) {
  if (!isRoot()) throw new Error('a Kuzzle cluster host needs root (network namespaces, veth pairs, a bridge): run the tests as root');
  const tag = `${PREFIX}${process.pid}${String.fromCharCode(97 + (clusterCount++ % 26))}`;
  const subnet = reserveSubnet();
  const { prefix } = subnet;
  const br = ['-n', `${tag}-br`];
  const attached = [];
  const net = {
    tag,
    prefix,
    bridgeNs: `${tag}-br`,
    bridge: `${tag}br`,
    bridgeAddress: `${prefix}.1`,
    hostLink: `${tag}h`,
    hostAddress: `${prefix}.254`,
    nodes: [],
    attach(name, hostNumber) {
      const spec = { ns: `${tag}-${name}`, link: `${tag}${name}`, address: `${prefix}.${hostNumber}` };
      if (spec.link.length > 15) throw new Error(`interface name ${spec.link} is too long (15 characters at most)`);
      attached.push(spec);
      const n = ['-n', spec.ns];
      ip('netns', 'add', spec.ns);
      ip(...n, 'link', 'set', 'lo', 'up');
      ip(...br, 'link', 'add', spec.link, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', spec.ns);
      ip(...br, 'link', 'set', spec.link, 'master', net.bridge, 'up');
      ip(...n, 'addr', 'add', `${spec.address}/24`, 'dev', 'eth0');
      ip(...n, 'link', 'set', 'eth0', 'up');
      return spec;
    },
    addHostAddress(hostNumber) {
      const address = `${prefix}.${hostNumber}`;
      ip('addr', 'add', `${address}/32`, 'dev', net.hostLink);
      return address;
    },
  };
  let removed = false;
  net.remove = () => {
    if (removed) return;
    removed = true;
    for (const spec of attached) destroyNamespace(spec.ns);
    destroyNamespace(net.bridgeNs);
    ipQuiet('link', 'del', net.hostLink); // also gone with the bridge namespace; made sure
    subnet.release();
  };

  try {
    ip('netns', 'add', net.bridgeNs);
    ip(...br, 'link', 'set', 'lo', 'up');
    ip(...br, 'link', 'add', net.bridge, 'type', 'bridge');
    ip(...br, 'addr', 'add', `${net.bridgeAddress}/24`, 'dev', net.bridge);
    ip(...br, 'link', 'set', net.bridge, 'up');

    // The root namespace's leg: the test process and the storage server live there.
    ip('link', 'add', net.hostLink, 'type', 'veth', 'peer', 'name', `${tag}hb`, 'netns', net.bridgeNs);
    ip(...br, 'link', 'set', `${tag}hb`, 'master', net.bridge, 'up');
    ip('addr', 'add', `${net.hostAddress}/24`, 'dev', net.hostLink);
    ip('link', 'set', net.hostLink, 'up');

    for (let i = 0; i < nodes; i++) net.nodes.push(net.attach(`n${i}`, 11 + i));
  } catch (error) {
    net.remove();
    throw error;
  }
  return net;
}

module.exports = { createNetwork, removeLeftovers, namespacePids, destroyNamespace, isRoot, ipBin, PREFIX };
