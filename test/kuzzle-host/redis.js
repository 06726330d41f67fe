'use strict';

// A private, throwaway redis-server (no persistence, a temp dir): startRedis() for the
// single-node host (127.0.0.1, a free port; or the Redis of REDIS_URL, if set: then nothing is
// started and stop() does nothing), spawnRedis() with options for the cluster's shared Redis
// (cluster/cluster.js: inside the bridge namespace).

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { onProcessExit, kill, waitExit } = require('./cleanup');

const BOOT_TIMEOUT = 10000;

function findExecutable(name) {
  const dirs = (process.env.PATH || '').split(path.delimiter).concat(['/usr/bin', '/usr/sbin', '/usr/local/bin']);
  for (const dir of dirs) {
    const file = path.join(dir, name);
    try {
      fs.accessSync(file, fs.constants.X_OK);
      return file;
    } catch {
      // not here
    }
  }
  return null;
}

// A TCP port nobody listens on (on `host`, or on all interfaces).
function freeTcpPort(host) {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, host, () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

// One PING round trip: true if Redis answers +PONG.
function ping(host, port) {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    let data = '';
    const done = (ok) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1000, () => done(false));
    socket.on('error', () => done(false));
    socket.on('connect', () => socket.write('PING\r\n'));
    socket.on('data', (chunk) => {
      data += chunk;
      if (data.includes('\r\n')) done(data.startsWith('+PONG'));
    });
  });
}

function fromUrl(url) {
  const u = new URL(url);
  return {
    url,
    host: u.hostname.replace(/^\[|\]$/g, ''),
    port: Number(u.port || 6379),
    password: u.password ? decodeURIComponent(u.password) : undefined,
    external: true,
    stop: async () => {},
  };
}

async function spawnOnce({ bin, host, port, namespace, protectedMode, dirPrefix }) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), dirPrefix));
  const args = ['--port', String(port), '--bind', host, '--protected-mode', protectedMode ? 'yes' : 'no',
    '--save', '', '--appendonly', 'no', '--dir', dir, '--daemonize', 'no', '--logfile', ''];
  const spawnOptions = { detached: true, stdio: ['ignore', 'pipe', 'pipe'] };
  // `ip netns exec` execs redis-server: child.pid is redis' pid.
  const child = namespace
    ? spawn(findExecutable('ip') ?? 'ip', ['netns', 'exec', namespace, bin, ...args], spawnOptions)
    : spawn(bin, args, spawnOptions);
  const where = `${host}:${port}${namespace ? ` in namespace ${namespace}` : ''}`;

  let output = '';
  const keep = (chunk) => { output = (output + chunk).slice(-16000); };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  let spawnError = null;
  child.on('error', (error) => { spawnError = error; });

  const removeDir = () => fs.rmSync(dir, { recursive: true, force: true });
  const removeHook = onProcessExit(() => {
    if (child.pid) kill(child.pid, 'SIGKILL'); // its directory goes right after
    removeDir();
  });
  let stopped = null;
  const stop = () => {
    stopped ??= (async () => {
      removeHook();
      if (child.pid) kill(child.pid);
      await waitExit(child, 5000);
      removeDir();
    })();
    return stopped;
  };

  // A PING from this process, also for a namespaced Redis: its address is reachable from here
  // (cluster: the bridge address, through the root veth).
  const deadline = Date.now() + BOOT_TIMEOUT;
  while (!(await ping(host, port))) {
    const exited = child.exitCode !== null || child.signalCode !== null;
    if (spawnError || exited || Date.now() > deadline) {
      await stop();
      const error = new Error(`redis-server did not start on ${where}: ${spawnError?.message || output.trim() || 'timeout'}`);
      error.portInUse = /address already in use/i.test(output);
      throw error;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  // Killed by stop() or at exit (cleanup.js): it must not keep this process alive.
  child.unref();
  child.stdout.unref();
  child.stderr.unref();
  return { url: `redis://${host}:${port}`, host, port, pid: child.pid, external: false, logs: () => output, stop };
}

/**
 * Spawns a private redis-server; resolves once it answers PING.
 *
 * @param {object} [options]
 * @param {string} [options.host='127.0.0.1'] the address it binds
 * @param {number} [options.port] default: a free port (probed in this process' namespace, so
 *   required with `namespace`)
 * @param {string} [options.namespace] network namespace to run it in (`ip netns exec`); `host`
 *   must be reachable from this process
 * @param {boolean} [options.protectedMode=true] false: accepts clients from other addresses (and
 *   namespaces) without a password, which protected mode refuses
 * @param {string} [options.dirPrefix='kuzzle-host-redis-'] name prefix of its temp dir
 * @returns {Promise<{url, host, port, pid, external: false, logs(): string, stop(): Promise<void>}>}
 */
async function spawnRedis({ host = '127.0.0.1', port, namespace, protectedMode = true, dirPrefix = 'kuzzle-host-redis-' } = {}) {
  const bin = findExecutable('redis-server');
  if (!bin) {
    const error = new Error('redis-server not found: install it (Debian: `apt-get install redis-server`)');
    error.code = 'REDIS_SERVER_MISSING';
    throw error;
  }
  const options = { bin, host, namespace, protectedMode, dirPrefix };
  if (port !== undefined) return spawnOnce({ ...options, port });
  if (namespace) throw new Error('spawnRedis: a port is required with a namespace');
  // The free port can be taken between the probe and redis' bind: retry.
  for (let attempt = 1; ; attempt++) {
    try {
      return await spawnOnce({ ...options, port: await freeTcpPort(host) });
    } catch (error) {
      if (!error.portInUse || attempt === 3) throw error;
    }
  }
}

/**
 * Starts a private redis-server on 127.0.0.1 (or uses REDIS_URL).
 * @returns {Promise<{url, host, port, password?, pid?, external, logs?(), stop(): Promise<void>}>}
 */
async function startRedis() {
  if (process.env.REDIS_URL) return fromUrl(process.env.REDIS_URL);
  return spawnRedis().catch((error) => {
    if (error.code === 'REDIS_SERVER_MISSING') error.message += ' or set REDIS_URL';
    throw error;
  });
}

module.exports = { startRedis, spawnRedis, freeTcpPort, findExecutable };
