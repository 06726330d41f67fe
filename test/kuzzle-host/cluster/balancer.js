'use strict';

/*
 * The cluster's UDP load balancer: nginx's stream module (Debian `nginx` + `libnginx-mod-stream`)
 * in the root namespace, in front of the nodes (layout: cluster.js).
 *
 *   device (root namespace)                 nginx (root namespace)                    node i
 *   127.0.0.1:<its port>  --UDP-->  127.0.0.1:<coapPort>  ...  <bind address>:<ephemeral>  --UDP-->  P.<11+i>:5683
 *   curl, fetch           --TCP-->  127.0.0.1:<httpPort>  ...  <bind address>           --TCP-->  P.<11+i>:7512
 *                        --TCP-->  127.0.0.1:<node i's loopback HTTP port>  -------------------->  P.<11+i>:7512
 *
 * - CoAP: one nginx "session" per device endpoint (address and port), pinned to a node by
 *   `hash $remote_addr$remote_port consistent`: a device keeps its node as long as its session
 *   lives. nginx sends the device's datagrams from one ephemeral port of its own per session, so a
 *   node sees every device as <bind address>:<that port>, a distinct endpoint per device. A session
 *   ends after `proxy_timeout` without traffic either way (1 h here: longer than the quiet time of
 *   an observe relation, whose notifications must still find the device). No `proxy_responses`:
 *   with it nginx ends the session after that many answers, and notifications that come later are
 *   dropped.
 * - Health: passive. A datagram to a node that is gone draws an ICMP port unreachable. nginx only
 *   logs the first one of a session ("recv() failed"); the second's waits on the socket; the third
 *   datagram's sendmsg() fails, which ends the session, counts as a failure (`max_fails`) and skips
 *   that node for `fail_timeout`: the device's fourth datagram opens a session on another node.
 *   `fail_timeout` is 120 s because it must outlast a device's whole retransmission sequence
 *   (libcoap gives a request up after 93 s and opens a new socket), or nginx tries the dead node
 *   again for that device and it starts over. A node that is stopped (SIGSTOP) or
 *   black-holed draws no ICMP: its devices stay pinned to it until their session times out, which
 *   is why the cluster runs a liveness probe that kills such a node (watchdog.js).
 * - The nodes see nginx's address, not the devices': nginx binds its upstream sockets to
 *   <bind address> (`proxy_bind`), P.253, an address added to the root veth for it, so that the
 *   tests tell balanced traffic (P.253) from direct traffic of the test process (P.254).
 * - HTTP: a TCP proxy on 127.0.0.1 (round robin over the nodes), and one loopback port per node, so
 *   that the URLs printed work on loopback too.
 *
 * What an operator sees behind nginx (measured by test/e2e/cluster.test.js):
 * - Every Kuzzle connection of a device carries nginx's address (here P.253; `connection.ips`,
 *   what Kuzzle logs and hands to plugins), one connection per nginx session (nginx's port); under
 *   nftables DNAT it would be the device's own address. The plugin keys its per-device state
 *   (connection, dedup, blocks, relations, per-peer limits) by address and port, so devices that
 *   share nginx's address stay apart.
 * - When a session expires (proxy_timeout without traffic) or its node fails, the device's next
 *   datagram opens a new session from a new nginx port: the node sees a new, unverified endpoint
 *   (a large answer costs it an Echo round trip), without the old one's relations or bound session;
 *   the old endpoint lingers until the plugin's idleTimeoutMs (or its relations fail).
 * - After a SIGKILL of a node, its devices come back on the others at their fourth datagram (see
 *   Health), later when many share the dead node: its kernel sends nginx's address about one port
 *   unreachable a second (net.ipv4.icmp_ratelimit), so that some datagrams draw none (14 of 20
 *   devices retrying every 2 s were back within 27 s). New devices go to the other nodes at once
 *   (the node is down for nginx for fail_timeout). test/e2e/cluster-failover.test.js measures it
 *   with the firmware example.
 * - worker_connections bounds the sessions (two connections each): raise it (and the fd limit)
 *   for many devices.
 *
 * nginx runs in the foreground (`daemon off`, master + 1 worker: UDP sessions are per worker, and
 * one worker keeps a device's datagrams in one session without `reuseport`), in a process group of
 * its own, with its configuration, pid file, error log and session log in a temporary directory
 * named after the run's tag ("<tag>-nginx-*"). stop() sends SIGTERM to the group (nginx's fast
 * shutdown: `nginx -s quit` would wait for every UDP session, i.e. proxy_timeout); a process exit
 * does the same through ../cleanup.js; after a SIGKILL of the test process the next start
 * (removeBalancerLeftovers) finds the group in the dead run's directory and ends it.
 */

const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { freeUdpPort, sleep } = require('../../support/util');
const { onProcessExit, kill, isAlive } = require('../cleanup');
const { findExecutable, freeTcpPort } = require('../redis');
const { coapPing: pingCoap } = require('../../../deploy/docker-compose/healthcheck');

const BIND_HOST_NUMBER = 253; // P.253: the address the nodes see for balanced traffic
const GROUP_FILE = 'group.pid'; // the nginx master's pid = its process group (written by us at spawn)
const DIR_RE = /^kzc(\d+)[a-z]-nginx-/;
const STREAM_MODULE_PATHS = ['/usr/lib/nginx/modules/ngx_stream_module.so', '/usr/share/nginx/modules/ngx_stream_module.so'];

/** Pids of the processes of group `pgid` whose command is nginx (from /proc). */
function nginxGroupPids(pgid) {
  const pids = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
      const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' '); // state ppid pgrp ...
      if (Number(fields[2]) === pgid && comm === 'nginx') pids.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

/**
 * Ends the nginx of crashed runs (their pid is dead): the process group named in
 * <tmp>/kzc<dead pid>?-nginx-*\/group.pid, if it still holds nginx processes. The directories
 * themselves are removed by netns.js' removeLeftovers(). Returns what was ended.
 */
function removeBalancerLeftovers() {
  const removed = [];
  for (const entry of fs.readdirSync(os.tmpdir())) {
    const owner = Number(entry.match(DIR_RE)?.[1]);
    if (!(owner > 0) || owner === process.pid || isAlive(owner)) continue;
    let pgid = 0;
    try {
      pgid = Number(fs.readFileSync(path.join(os.tmpdir(), entry, GROUP_FILE), 'utf8').trim());
    } catch {
      continue;
    }
    if (pgid > 0 && nginxGroupPids(pgid).length > 0) {
      kill(-pgid, 'SIGTERM');
      removed.push(`nginx group ${pgid} (${entry})`);
    }
  }
  return removed;
}

function nginxBinary() {
  const bin = findExecutable('nginx');
  if (!bin) throw new Error('nginx is missing: apt-get install nginx libnginx-mod-stream (node test/system-packages.js does it as root)');
  return bin;
}

/** The load_module line for the stream module, '' if nginx has it built in. */
function streamModuleLine(bin) {
  // `nginx -V` prints its configure arguments on stderr.
  const run = spawnSync(bin, ['-V'], { encoding: 'utf8' });
  const configure = `${run.stdout ?? ''}${run.stderr ?? ''}`;
  if (/--with-stream(\s|$)/.test(configure)) return '';
  const modulesPath = configure.match(/--modules-path=(\S+)/)?.[1];
  const candidates = [...(modulesPath ? [path.join(modulesPath, 'ngx_stream_module.so')] : []), ...STREAM_MODULE_PATHS];
  const found = candidates.find((file) => fs.existsSync(file));
  if (!found) throw new Error('nginx\'s stream module is missing: apt-get install libnginx-mod-stream');
  return `load_module ${found};`;
}

/** Whether a TCP connection to host:port is accepted. */
function tcpOpen(port, host = '127.0.0.1') {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    const done = (ok) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1000, () => done(false));
    socket.once('error', () => done(false));
    socket.once('connect', () => done(true));
  });
}

/** A CoAP ping (empty CON) to host:port: true when a RST comes back within ms (the nodes' Docker health check's ping). */
async function coapPing(port, ms = 1000, host = '127.0.0.1') {
  return (await pingCoap(host, port, ms)) === null;
}

/**
 * The configuration text (exported for the report and the tests).
 *
 * @param {object} c
 * @param {string} c.dir prefix directory (pid file, logs)
 * @param {string} c.moduleLine load_module line or ''
 * @param {string} c.bindAddress proxy_bind address (what the nodes see)
 * @param {{address: string, coapPort: number, httpPort: number}[]} c.nodes
 * @param {{coap: number, http: number, nodeHttp: number[]}} c.listen loopback ports
 * @param {string} c.proxyTimeout e.g. '1h'
 * @param {number} c.maxFails
 * @param {string} c.failTimeout e.g. '120s'
 */
function nginxConfig({ dir, tag, moduleLine, bindAddress, nodes, listen, proxyTimeout, maxFails, failTimeout }) {
  const servers = (portOf) => nodes.map((n) => `    server ${n.address}:${portOf(n)} max_fails=${maxFails} fail_timeout=${failTimeout};`).join('\n');
  const nodeHttp = nodes.map((n, i) => `
  # node ${i}'s HTTP on loopback
  server {
    listen 127.0.0.1:${listen.nodeHttp[i]};
    proxy_pass ${n.address}:${n.httpPort};
  }`).join('');
  return `# nginx of the Kuzzle test cluster ${tag} (test/kuzzle-host/cluster/balancer.js); removed at stop
${moduleLine}
daemon off;
master_process on;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log notice;

events {
  worker_connections 4096;
}

stream {
  log_format sessions '$time_local $protocol $remote_addr:$remote_port -> $upstream_addr '
                      '$status $session_time s, $bytes_received B in, $bytes_sent B out';
  access_log ${dir}/sessions.log sessions;

  # CoAP: a device endpoint (address and port) sticks to one node for its session.
  upstream kuzzle_coap {
    hash $remote_addr$remote_port consistent;
${servers((n) => n.coapPort)}
  }

  server {
    listen 127.0.0.1:${listen.coap} udp;
    proxy_pass kuzzle_coap;
    proxy_bind ${bindAddress};
    # Longer than any quiet time of an observe relation: its notifications need the session.
    proxy_timeout ${proxyTimeout};
    # No proxy_responses: the session would end after that many answers.
  }

  # Kuzzle's HTTP API, round robin.
  upstream kuzzle_http {
${servers((n) => n.httpPort)}
  }

  server {
    listen 127.0.0.1:${listen.http};
    proxy_pass kuzzle_http;
    proxy_bind ${bindAddress};
    proxy_connect_timeout 2s;
  }
${nodeHttp}
}
`;
}

/**
 * Starts nginx in front of the nodes; resolves once a CoAP ping through it is answered.
 *
 * @param {object} spec
 * @param {object} spec.net the cluster's network (netns.js createNetwork)
 * @param {{address: string, coapPort: number, httpPort: number}[]} spec.nodes
 * @param {string} [spec.proxyTimeout='1h']
 * @param {number} [spec.maxFails=1]
 * @param {string} [spec.failTimeout='120s']
 * @param {number} [spec.bootTimeout=10000] ms
 * @param {string} [spec.bindAddress] proxy_bind address already on the root veth (a second nginx
 *   beside the cluster's: its `address`); default: P.253, added to the veth here
 */
async function startBalancer({ net: network, nodes, proxyTimeout = '1h', maxFails = 1, failTimeout = '120s', bootTimeout = 10000, bindAddress: boundAddress = null }) {
  const began = Date.now();
  const bin = nginxBinary();
  const moduleLine = streamModuleLine(bin);
  const bindAddress = boundAddress ?? network.addHostAddress(BIND_HOST_NUMBER);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `${network.tag}-nginx-`));
  const confFile = path.join(dir, 'nginx.conf');
  const errorLog = path.join(dir, 'error.log');
  const sessionsLog = path.join(dir, 'sessions.log');
  const read = (file) => {
    try {
      return fs.readFileSync(file, 'utf8');
    } catch {
      return '';
    }
  };

  let child = null;
  let output = '';
  let removeHook = () => {};
  const running = () => child !== null && child.exitCode === null && child.signalCode === null;
  const exited = () => new Promise((resolve) => {
    if (!running()) resolve();
    else child.once('exit', () => resolve());
  });
  const removeDir = () => fs.rmSync(dir, { recursive: true, force: true });
  /** SIGTERM to the group (master and worker), SIGKILL to it after ms. */
  const endGroup = async (ms = 5000) => {
    if (child?.pid) {
      kill(-child.pid, 'SIGTERM');
      const timer = setTimeout(() => kill(-child.pid, 'SIGKILL'), ms);
      await exited();
      clearTimeout(timer);
      // A worker outliving its master (it should not): the group is ours.
      for (const pid of nginxGroupPids(child.pid)) kill(pid, 'SIGKILL');
    }
  };

  let listen;
  let config;
  for (let attempt = 1; ; attempt++) {
    listen = {
      coap: await freeUdpPort(),
      http: await freeTcpPort('127.0.0.1'),
      nodeHttp: await Promise.all(nodes.map(() => freeTcpPort('127.0.0.1'))),
    };
    config = nginxConfig({
      dir, tag: network.tag, moduleLine, bindAddress, nodes, listen, proxyTimeout, maxFails, failTimeout,
    });
    fs.writeFileSync(confFile, config);
    output = '';
    child = spawn(bin, ['-p', dir, '-c', confFile, '-e', errorLog], { detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    child.on('error', (error) => { output += `${error.message}\n`; });
    child.stdout.on('data', (chunk) => { output = (output + chunk).slice(-16000); });
    child.stderr.on('data', (chunk) => { output = (output + chunk).slice(-16000); });
    if (child.pid) fs.writeFileSync(path.join(dir, GROUP_FILE), String(child.pid));
    const pid = child.pid;
    removeHook = onProcessExit(() => {
      if (pid) kill(-pid, 'SIGTERM');
      removeDir();
    });

    const deadline = Date.now() + bootTimeout;
    let ready = false;
    while (!ready && running() && Date.now() < deadline) {
      ready = (await tcpOpen(listen.http)) && (await coapPing(listen.coap, 500));
      if (!ready) await sleep(100);
    }
    if (ready) break;
    const why = `${output}${read(errorLog)}`.trim();
    await endGroup();
    removeHook();
    if (attempt < 3 && /Address already in use/.test(why)) continue; // a port taken meanwhile: new ones
    removeDir();
    throw new Error(`nginx did not start (${running() ? 'no answer through it' : `exit ${child.exitCode ?? child.signalCode}`}): ${why || 'timeout'}\n--- ${confFile} ---\n${config}`);
  }
  child.unref();
  child.stdout.unref();
  child.stderr.unref();

  let stopping = null;
  return {
    kind: 'nginx',
    pid: child.pid,
    dir,
    config,
    configFile: confFile,
    host: '127.0.0.1',
    /** The address the nodes see for every device behind nginx. */
    address: bindAddress,
    coapPort: listen.coap,
    httpPort: listen.http,
    coapUrl: `coap://127.0.0.1:${listen.coap}`,
    httpUrl: `http://127.0.0.1:${listen.http}`,
    /** Node i's HTTP API on loopback (a TCP proxy of this nginx). */
    nodeHttpUrls: listen.nodeHttp.map((port) => `http://127.0.0.1:${port}`),
    proxyTimeout,
    /** ms from startBalancer() to the first CoAP ping answered through nginx */
    startMs: Date.now() - began,
    isRunning: running,
    /** nginx's error log (and output). */
    logs: () => `${output}${read(errorLog)}`,
    /** One line per ended session (nginx logs a session when it ends). */
    sessions: () => read(sessionsLog),
    /** SIGTERM (fast shutdown: open UDP sessions do not hold it), SIGKILL after ms; removes its directory. */
    stop(ms = 5000) {
      stopping ??= (async () => {
        await endGroup(ms);
        removeHook();
        removeDir();
      })();
      return stopping;
    },
  };
}

module.exports = {
  startBalancer, removeBalancerLeftovers, nginxConfig, nginxGroupPids, coapPing, tcpOpen, nginxBinary, streamModuleLine,
};
