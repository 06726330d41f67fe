'use strict';

/*
 * One Kuzzle node of a cluster: ../child.js (the host's Kuzzle process) forked inside the node's
 * network namespace, `ip netns exec <ns> node child.js` (ip execs node: the child's pid is
 * Kuzzle's, and the IPC channel crosses the exec), driven through ../childIpc.js as ../index.js
 * drives its one. Kuzzle's output is kept in memory (logs()), or shown with verbose.
 */

const { fork } = require('node:child_process');
const path = require('node:path');
const { kill, waitExit } = require('../cleanup');
const { connectChild } = require('../childIpc');
const { ipBin } = require('./netns');

const childJs = path.join(__dirname, '..', 'child.js');
const LOG_LIMIT = 256 * 1024;

/**
 * Forks a Kuzzle node in namespace `ns` and waits for its "ready".
 *
 * @param {object} spec
 * @param {string} spec.ns network namespace
 * @param {object} spec.options child.js start options (port, coap, cluster, redis, elasticsearchUrl, ...)
 * @param {boolean} [spec.verbose] Kuzzle's output on this process' stdout/stderr, prefixed
 * @param {string} [spec.label] prefix of verbose lines
 * @param {number} [spec.bootTimeout=60000] ms
 * @param {object} [spec.env] added to the node's environment
 * @returns {Promise<{pid, ready, exited, logs(), query(), ask(), coapStats(), kill(signal), stop()}>}
 *   On failure the error carries `logs` (the node's output).
 */
async function startNode({ ns, options, verbose = false, label = ns, bootTimeout = 60000, env }) {
  const child = fork(childJs, [], {
    execPath: ipBin,
    execArgv: ['netns', 'exec', ns, process.execPath],
    detached: true, // no terminal Ctrl-C: the cluster stops its nodes
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
  });
  let output = '';
  for (const [stream, out] of [[child.stdout, process.stdout], [child.stderr, process.stderr]]) {
    stream.on('data', (chunk) => {
      output = (output + chunk).slice(-LOG_LIMIT);
      if (verbose) out.write(String(chunk).replace(/^(?=.)/gm, `[${label}] `));
    });
  }
  child.on('error', () => {}); // spawn errors show up as an exit
  const ipc = connectChild(child, `Kuzzle node ${label}`);

  const isRunning = () => child.exitCode === null && child.signalCode === null;
  const node = {
    pid: child.pid,
    exited: ipc.exited,
    isRunning,
    logs: () => output,
    query: ipc.query,
    ask: ipc.ask,
    coapStats: ipc.coapStats,
    /** Sends `signal`; for a terminating signal, resolves once Kuzzle has exited (SIGKILL after 15 s). */
    async kill(signal = 'SIGKILL') {
      if (!isRunning()) return;
      kill(child.pid, signal);
      if (['SIGKILL', 'SIGTERM', 'SIGINT', 'SIGQUIT', 'SIGHUP'].includes(signal)) await waitExit(child, 15000);
    },
    /** Graceful: SIGTERM (Kuzzle's own shutdown), SIGKILL after `ms`. */
    async stop(ms = 10000) {
      if (!isRunning()) return;
      kill(child.pid, 'SIGCONT'); // in case a test SIGSTOPped it
      kill(child.pid, 'SIGTERM');
      await waitExit(child, ms);
    },
  };

  try {
    node.ready = await ipc.start(options, bootTimeout);
  } catch (error) {
    kill(child.pid, 'SIGKILL');
    await waitExit(child, 5000);
    error.message = `Kuzzle node ${label} did not start: ${error.message}`;
    error.logs = output;
    throw error;
  }
  // Nothing of a node keeps this process alive (a forgotten stop() does not hang a test; the IPC
  // channel: ../childIpc.js): the cluster kills it at exit.
  child.unref();
  child.stdout.unref();
  child.stderr.unref();
  return node;
}

module.exports = { startNode };
