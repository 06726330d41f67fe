'use strict';

// Last-resort cleanup of the processes a host starts (redis-server, Kuzzle):
// they run in their own process group (so that a terminal Ctrl-C does not
// hit them before the host stops them in order), hence nothing else would
// stop them if this process dies. Hooks must be synchronous (process 'exit').

const hooks = new Set();
let installed = false;

function runHooks() {
  for (const hook of hooks) {
    try {
      hook();
    } catch {
      // best effort: the other hooks must still run
    }
  }
  hooks.clear();
}

function onSignal(signal) {
  const handler = () => {
    // Someone else handles this signal (e.g. the dev command stops the host
    // gracefully, or the test runner exits): the 'exit' hook still covers us.
    if (process.listeners(signal).some((l) => l !== handler)) return;
    runHooks();
    process.removeListener(signal, handler);
    process.kill(process.pid, signal); // default behaviour: die by this signal
  };
  process.on(signal, handler);
}

/**
 * Runs `hook` (synchronously) if this process exits or is killed by
 * SIGINT/SIGTERM/SIGHUP before the returned `remove()` is called.
 */
function onProcessExit(hook) {
  if (!installed) {
    installed = true;
    process.on('exit', runHooks);
    ['SIGINT', 'SIGTERM', 'SIGHUP'].forEach(onSignal);
  }
  hooks.add(hook);
  return () => hooks.delete(hook);
}

/** Sends `signal` to a pid, ignoring "no such process". */
function kill(pid, signal = 'SIGTERM') {
  try {
    process.kill(pid, signal);
  } catch (error) {
    if (error.code !== 'ESRCH') throw error;
  }
}

/** Resolves when `child` has exited; SIGKILLs it after `ms`. */
function waitExit(child, ms) {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => kill(child.pid, 'SIGKILL'), ms);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/** Whether a process exists (EPERM: it does, another user's). */
function isAlive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return error.code === 'EPERM';
  }
}

module.exports = { onProcessExit, kill, waitExit, isAlive };
