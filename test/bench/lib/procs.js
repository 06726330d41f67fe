'use strict';
// Child processes of the bench: forked with an IPC channel, driven by small
// RPC calls, and all killed when the bench exits (normally, on an error or on
// Ctrl-C). Children also exit on their own when the IPC channel closes.
const { fork, execFileSync } = require('node:child_process');

const children = new Set();
let hooksInstalled = false;

function killAll() {
  for (const child of children) {
    try { child.kill('SIGKILL'); } catch { /* already gone */ }
  }
  children.clear();
}

function installHooks() {
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.on('exit', killAll);
  for (const [signal, code] of [['SIGINT', 130], ['SIGTERM', 143], ['SIGHUP', 129]]) {
    process.on(signal, () => {
      process.stderr.write(`\nbench: ${signal}, stopping every child process\n`);
      killAll();
      process.exit(code); // the Kuzzle host's own 'exit' hook kills Kuzzle and Redis
    });
  }
}

/** Pins a process (all its threads) to one CPU; best effort. */
function pin(pid, cpu) {
  try { execFileSync('taskset', ['-a', '-p', '-c', String(cpu), String(pid)], { stdio: 'ignore' }); } catch { /* no taskset */ }
}

/**
 * Forks `script`; resolves once it sent {type:'ready', info}.
 * Returns { pid, info, call(cmd, args, timeoutMs), stop(), exited }.
 */
function spawnChild(script, args = [], { execArgv = [], name = script, cpu = null, bootMs = 20000 } = {}) {
  installHooks();
  const child = fork(script, args, { execArgv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  children.add(child);
  if (cpu !== null) pin(child.pid, cpu);
  const pending = new Map();
  let nextId = 0;
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => {
    children.delete(child);
    for (const { reject } of pending.values()) reject(new Error(`${name} exited (${signal ?? code})`));
    pending.clear();
    resolve({ code, signal });
  }));
  child.on('message', (message) => {
    if (message?.type !== 'reply') return;
    const call = pending.get(message.id);
    if (call === undefined) return;
    pending.delete(message.id);
    clearTimeout(call.timer);
    if (message.error) call.reject(new Error(`${name}: ${message.error}`));
    else call.resolve(message.result);
  });
  const call = (cmd, callArgs = {}, timeoutMs = 120000) => new Promise((resolve, reject) => {
    if (!child.connected) return reject(new Error(`${name} is not running`));
    const id = ++nextId;
    const timer = setTimeout(() => {
      pending.delete(id);
      reject(new Error(`${name}: ${cmd} took more than ${timeoutMs} ms`));
    }, timeoutMs);
    pending.set(id, { resolve, reject, timer });
    child.send({ type: 'call', id, cmd, args: callArgs });
  });
  const stop = async (graceMs = 5000) => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    try { child.send({ type: 'call', id: 0, cmd: 'exit', args: {} }); } catch { /* channel closed */ }
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    await exited;
    clearTimeout(timer);
  };
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name} did not start within ${bootMs} ms`)), bootMs);
    child.on('message', (message) => {
      if (message?.type === 'ready') {
        clearTimeout(timer);
        resolve({ pid: child.pid, info: message.info, call, stop, exited });
      }
    });
    exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`${name} exited during start (${signal ?? code})`));
    });
  });
}

// Commands every child answers: its CPU time so far (µs), to tell who was the bottleneck.
const BUILTIN = { cpu: () => process.cpuUsage() };

/** Child side: answers {type:'call'} messages with `handlers[cmd](args)`; 'exit' ends the process. */
function serve(handlers, info = {}) {
  process.on('disconnect', () => process.exit(0)); // the bench is gone: do not outlive it
  process.on('message', async (message) => {
    if (message?.type !== 'call') return;
    const { id, cmd, args } = message;
    if (cmd === 'exit') {
      try { await handlers.exit?.(); } finally { process.exit(0); }
      return;
    }
    try {
      const handler = handlers[cmd] ?? BUILTIN[cmd];
      if (handler === undefined) throw new Error(`unknown command ${cmd}`);
      const result = await handler(args);
      process.send({ type: 'reply', id, result });
    } catch (error) {
      process.send({ type: 'reply', id, error: error?.stack ?? String(error) });
    }
  });
  process.send({ type: 'ready', info });
}

module.exports = { spawnChild, serve, killAll, installHooks };
