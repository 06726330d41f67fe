'use strict';

// A private, throwaway Redis for one Kuzzle host: redis-server on 127.0.0.1,
// a free port, no persistence, a temp dir. Or the Redis of REDIS_URL, if set
// (then nothing is started and stop() does nothing).

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

async function spawnRedis(bin) {
  const host = '127.0.0.1';
  const port = await freeTcpPort(host);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kuzzle-host-redis-'));
  const child = spawn(bin, [
    '--port', String(port), '--bind', host, '--save', '', '--appendonly', 'no',
    '--dir', dir, '--daemonize', 'no', '--logfile', '',
  ], { detached: true, stdio: ['ignore', 'pipe', 'pipe'] });

  let output = '';
  const keep = (chunk) => { output = (output + chunk).slice(-4000); };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  let spawnError = null;
  child.on('error', (error) => { spawnError = error; });

  const removeDir = () => fs.rmSync(dir, { recursive: true, force: true });
  const removeHook = onProcessExit(() => {
    kill(child.pid);
    removeDir();
  });
  let stopped = null;
  const stop = () => {
    stopped ??= (async () => {
      removeHook();
      kill(child.pid);
      await waitExit(child, 5000);
      removeDir();
    })();
    return stopped;
  };

  const deadline = Date.now() + BOOT_TIMEOUT;
  while (!(await ping(host, port))) {
    const exited = child.exitCode !== null || child.signalCode !== null;
    if (spawnError || exited || Date.now() > deadline) {
      await stop();
      const error = new Error(`redis-server did not start on ${host}:${port}: ${spawnError?.message || output.trim() || 'timeout'}`);
      error.portInUse = /address already in use/i.test(output);
      throw error;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  // Killed by stop() or at exit (cleanup.js): it must not keep this process alive.
  child.unref();
  child.stdout.unref();
  child.stderr.unref();
  return { url: `redis://${host}:${port}`, host, port, pid: child.pid, external: false, stop };
}

/**
 * Starts a private redis-server (or uses REDIS_URL).
 * @returns {Promise<{url, host, port, password?, pid?, external, stop(): Promise<void>}>}
 */
async function startRedis() {
  if (process.env.REDIS_URL) return fromUrl(process.env.REDIS_URL);
  const bin = findExecutable('redis-server');
  if (!bin) {
    const error = new Error('redis-server not found: install it (Debian: `apt-get install redis-server`) or set REDIS_URL');
    error.code = 'REDIS_SERVER_MISSING';
    throw error;
  }
  // The free port can be taken between the probe and redis' bind: retry.
  for (let attempt = 1; ; attempt++) {
    try {
      return await spawnRedis(bin);
    } catch (error) {
      if (!error.portInUse || attempt === 3) throw error;
    }
  }
}

module.exports = { startRedis, freeTcpPort, findExecutable };
