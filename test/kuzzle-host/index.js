'use strict';

/*
 * A real Kuzzle 2.56 for development and end-to-end tests, with the CoAP
 * protocol installed from this project (or not).
 *
 *   const { startKuzzleHost } = require('./test/kuzzle-host');
 *   const host = await startKuzzleHost({ coap: { ... } });
 *   ... fetch(`${host.url}/_query`) / CoAP on host.coapPort ...
 *   await host.stop();
 *
 * Choices:
 * - Kuzzle runs in a forked child process (child.js), not in the test process:
 *   a Kuzzle instance lives in globals (global.kuzzle, global.app, a read-only
 *   global.nodeId) and module state (the ES client's connection state, the
 *   shared pino logger); start() replaces the process' SIGINT/SIGTERM/
 *   uncaughtException/unhandledRejection handlers; shutdown() ends with
 *   process.exit(0). Only a process exit reliably frees the ports and all of
 *   that, so that test files can boot one host after another. The child says
 *   "ready" over IPC; `host.kuzzle` is a small IPC proxy to it.
 * - Storage is the in-memory Elasticsearch 7 emulation (memory-elasticsearch.js)
 *   unless ELASTICSEARCH_URL is set. Redis is a private redis-server unless
 *   REDIS_URL is set.
 * - `cluster.enabled: false` (the cluster needs a private IPv4 address). The
 *   realtime core then needs someone to answer the cluster events: child.js
 *   registers single-node handlers from a `kuzzle:state:live` pipe, i.e. when
 *   the core is ready but before any protocol listens (the Kuzzle object
 *   does not exist before app.start(); after it, clients could already
 *   subscribe).
 * - Configuration: explicit options win; then the user's Kuzzle configuration
 *   (.kuzzlerc, kuzzle_* env variables such as
 *   kuzzle_server__protocols__coap__port=5683); then this host's defaults
 *   (free ports, CoAP on 127.0.0.1).
 * - The plugin is installed as a symlink
 *   node_modules/kuzzle/dist/protocols/enabled/coap -> <project root>
 *   (Kuzzle loads every folder there). The link stays after stop(); every
 *   start sets it (or removes it, with installPlugin:false).
 * - Logs: quiet by default, as Kuzzle's output goes to a pipe and stays in
 *   memory (host.logs(); a boot failure error ends with it) rather than
 *   lowering the log level: a failure then comes with its context.
 *   KUZZLE_HOST_VERBOSE=1 (or verbose:true) shows it; logLevel sets the level.
 * - The child processes are unref'ed: a test that forgets stop() does not
 *   hang; they are killed when this process exits (cleanup.js).
 */

const { fork } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { startRedis } = require('./redis');
const { onProcessExit, kill, waitExit } = require('./cleanup');
const { connectChild } = require('./childIpc');

const projectRoot = path.resolve(__dirname, '../..');
// Where Kuzzle's entryPoint.loadMoreProtocols() looks for protocols.
const enabledDir = path.join(path.dirname(require.resolve('kuzzle/dist/lib/core/network/entryPoint.js')), '../../../protocols/enabled');
const linkPath = path.join(enabledDir, 'coap');

/** Points enabled/coap at `target` (or removes it when target is null). */
function linkProtocol(target) {
  let current = null;
  try {
    if (!fs.lstatSync(linkPath).isSymbolicLink()) {
      throw new Error(`${linkPath} is not a symlink (a copied plugin?): remove it first`);
    }
    current = fs.readlinkSync(linkPath);
  } catch (error) {
    if (error.code !== 'ENOENT') throw error;
  }
  if (current === target) return;
  if (current !== null) fs.unlinkSync(linkPath);
  if (target === null) return;
  try {
    require.resolve(target); // what Kuzzle will require: package.json "main"
  } catch {
    throw new Error(`cannot install the protocol: ${target} has no loadable entry point (run \`npm run build\`?)`);
  }
  if (!fs.existsSync(path.join(target, 'manifest.json'))) {
    throw new Error(`cannot install the protocol: ${target}/manifest.json is missing`);
  }
  fs.mkdirSync(enabledDir, { recursive: true });
  fs.symlinkSync(target, linkPath, 'dir');
}

/**
 * Starts Redis (unless REDIS_URL) and a Kuzzle 2.56 child process.
 *
 * @param {object} [options]
 * @param {number} [options.port] Kuzzle HTTP/WebSocket TCP port; wins over the user's configuration
 *   (default: user configuration, else defaults.port, else a free port)
 * @param {object} [options.coap] merged over server.protocols.coap; wins over the user's configuration
 * @param {{port?: number, coap?: object}} [options.defaults] used only where the user configured
 *   nothing (built-in: CoAP host 127.0.0.1, free TCP/UDP ports)
 * @param {boolean} [options.installPlugin=true] false: Kuzzle without the CoAP protocol
 * @param {string} [options.protocolDir] directory to install instead of the project root
 * @param {string} [options.logLevel] Kuzzle's server.appLogs.level (default: configured, else info)
 * @param {string} [options.appSetup] path of a module `(app) => void|Promise` run on the Backend before start
 * @param {boolean} [options.verbose] Kuzzle's output on this process' stdout/stderr
 *   (default: KUZZLE_HOST_VERBOSE=1). Else it is captured: see logs(), and a boot error ends with it.
 * @param {number} [options.bootTimeout=60000] ms
 */
async function startKuzzleHost(options = {}) {
  const began = Date.now();
  const verbose = options.verbose ?? process.env.KUZZLE_HOST_VERBOSE === '1';
  const installPlugin = options.installPlugin ?? true;
  linkProtocol(installPlugin ? path.resolve(options.protocolDir ?? projectRoot) : null);

  const redis = await startRedis();
  const child = fork(path.join(__dirname, 'child.js'), [], {
    detached: true, // not hit by a terminal Ctrl-C: stop() stops it, then Redis
    stdio: verbose ? ['ignore', 'inherit', 'inherit', 'ipc'] : ['ignore', 'pipe', 'pipe', 'ipc'],
  });
  let output = '';
  for (const stream of [child.stdout, child.stderr]) {
    stream?.on('data', (chunk) => { output = (output + chunk).slice(-64 * 1024); });
  }
  const removeHook = onProcessExit(() => kill(child.pid, 'SIGKILL'));
  const ipc = connectChild(child);

  let stopping = null;
  const stop = () => {
    stopping ??= (async () => {
      removeHook();
      kill(child.pid, 'SIGTERM'); // Kuzzle's handler: graceful shutdown, then exit
      await waitExit(child, 10000);
      await redis.stop();
    })();
    return stopping;
  };

  let ready;
  try {
    ready = await ipc.start({
      port: options.port,
      coap: options.coap,
      defaults: options.defaults,
      logLevel: options.logLevel,
      appSetup: options.appSetup,
      redis: { host: redis.host, port: redis.port, password: redis.password },
      elasticsearchUrl: process.env.ELASTICSEARCH_URL || undefined,
    }, options.bootTimeout ?? 60000);
  } catch (error) {
    await stop();
    const tail = output.trim() ? `\n--- Kuzzle output (end) ---\n${output.trim().slice(-8000)}` : '';
    error.message = `Kuzzle host did not start: ${error.message}${tail}`;
    throw error;
  }

  // From now on, nothing of ours keeps this process alive (see header; the IPC channel: childIpc.js).
  child.unref();
  child.stdout?.unref();
  child.stderr?.unref();

  return {
    /** IPC proxy to the Kuzzle child (childIpc.js): query() = app.sdk.query() (embedded SDK, all rights),
     * ask() = kuzzle.ask(), coapStats() = the plugin's stats() */
    kuzzle: { pid: child.pid, query: ipc.query, ask: ipc.ask, coapStats: ipc.coapStats },
    httpPort: ready.httpPort,
    url: `http://127.0.0.1:${ready.httpPort}`,
    coapPort: ready.coapPort,
    coapsPort: ready.coapsPort,
    coapHost: ready.coapHost,
    coapConfig: ready.coapConfig,
    protocols: ready.protocols,
    storage: ready.storage,
    redis,
    bootMs: Date.now() - began,
    exited: ipc.exited,
    logs: () => output,
    stop,
  };
}

module.exports = { startKuzzleHost, linkProtocol, linkPath, projectRoot };
