'use strict';
/**
 * Real peers for the tests: libcoap's coap-client-notls and Debian's python3-cbor2 as an
 * independent CBOR codec. A missing tool fails the test with the package to install; nothing is
 * skipped. (A raw UDP CoAP peer: raw.js.)
 *
 * Every coap-client started here is tracked: `killAll()` (call it in after()) kills those still
 * running, and whatever is left is killed when this process exits.
 */
const { spawn, execFileSync } = require('node:child_process');

const COAP_CLIENT = 'coap-client-notls';
const SYSTEM_PYTHON = '/usr/bin/python3';

// ---- coap-client-notls ----------------------------------------------------------------------

const children = new Set();
process.on('exit', () => {
  for (const child of children) {
    try {
      child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
});

/** Kills every coap-client still running and waits for their exit. */
async function killAll() {
  const waits = [];
  for (const child of children) {
    if (child.exitCode === null && child.signalCode === null) {
      waits.push(new Promise((resolve) => child.once('exit', resolve)));
      child.kill('SIGKILL');
    }
  }
  children.clear();
  await Promise.all(waits);
}

function spawnTracked(args, stdin = 'ignore', binary = COAP_CLIENT) {
  const child = spawn(binary, args, { stdio: [stdin, 'pipe', 'pipe'] });
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

/**
 * Runs coap-client-notls (or `binary`: coap-client-openssl, coap-client-gnutls for coaps) to its
 * end, `input` on its stdin if given (SIGKILL after timeoutMs); resolves {exit, signal, stdout
 * (Buffer), stderr}.
 */
function coapClient(args, { timeoutMs = 10000, input, binary = COAP_CLIENT } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawnTracked(args, input === undefined ? 'ignore' : 'pipe', binary);
    const out = [];
    let err = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.stdout.on('data', (chunk) => out.push(chunk));
    child.stderr.on('data', (chunk) => (err += chunk));
    child.on('error', (error) => {
      clearTimeout(timer);
      reject(error.code === 'ENOENT' ? new Error(`${binary} is missing: apt-get install libcoap3-bin`) : error);
    });
    child.on('close', (exit, signal) => {
      clearTimeout(timer);
      resolve({ exit, signal, stdout: Buffer.concat(out), stderr: err });
    });
    if (input !== undefined) child.stdin.end(input);
  });
}

/**
 * A long-running coap-client (Observe): `lines` collects every stdout/stderr line with its arrival
 * time; `waitLine(predicate, ms)` resolves with the first matching line (searching from `from`).
 */
function spawnCoapClient(args, { binary = COAP_CLIENT } = {}) {
  const child = spawnTracked(args, 'ignore', binary);
  const lines = [];
  const waiters = new Set();
  const feed = (stream) => {
    let rest = '';
    child[stream].on('data', (chunk) => {
      const at = Date.now();
      rest += chunk.toString('utf8');
      const parts = rest.split('\n');
      rest = parts.pop();
      for (const text of parts) {
        if (text.trim() === '') continue;
        lines.push({ at, stream, text });
      }
      for (const waiter of waiters) waiter();
    });
  };
  feed('stdout');
  feed('stderr');
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  return {
    child,
    lines,
    exited,
    waitLine(predicate, ms = 3000, from = 0) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const line = lines.slice(from).find(predicate);
          if (line === undefined) return false;
          done();
          resolve(line);
          return true;
        };
        const timer = setTimeout(() => {
          done();
          reject(new Error(`no matching coap-client line within ${ms} ms; got:\n${lines.map((l) => `${l.stream}: ${l.text}`).join('\n')}`));
        }, ms);
        const done = () => {
          clearTimeout(timer);
          waiters.delete(check);
        };
        if (!check()) waiters.add(check);
      });
    },
    async kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    },
  };
}

/** Splits concatenated JSON texts (coap-client prints payloads back to back) into values. */
function splitJson(text) {
  const values = [];
  let depth = 0;
  let start = -1;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (inString) {
      if (c === '\\') i++;
      else if (c === '"') inString = false;
      continue;
    }
    if (c === '"') inString = true;
    else if (c === '{' || c === '[') {
      if (depth++ === 0) start = i;
    } else if ((c === '}' || c === ']') && --depth === 0) {
      values.push(JSON.parse(text.slice(start, i + 1)));
    }
  }
  return values;
}

// ---- python3-cbor2 --------------------------------------------------------------------------

function cbor2(what, script, input) {
  try {
    return execFileSync(SYSTEM_PYTHON, ['-c', ['import sys, json, cbor2', ...script].join('\n')], { input });
  } catch (error) {
    throw new Error(`python3-cbor2 could not ${what} (apt-get install python3-cbor2): ${error.message}`);
  }
}

/** Decodes CBOR with python3-cbor2 and returns it as JSON-compatible data plus Python type names. */
function decodeWithCbor2(buffer) {
  return JSON.parse(cbor2('decode', [
    'v = cbor2.loads(sys.stdin.buffer.read())',
    'def types(x):',
    '    if isinstance(x, dict): return {k: types(w) for k, w in x.items()}',
    '    if isinstance(x, list): return [types(w) for w in x]',
    '    return type(x).__name__',
    'print(json.dumps({"value": v, "types": types(v)}))',
  ], buffer).toString());
}

/** Encodes JSON-compatible data with python3-cbor2 (an encoder independent of the plugin's). */
function encodeWithCbor2(value) {
  return cbor2('encode', ['sys.stdout.buffer.write(cbor2.dumps(json.loads(sys.stdin.read())))'], JSON.stringify(value));
}

module.exports = {
  COAP_CLIENT,
  SYSTEM_PYTHON,
  coapClient,
  spawnCoapClient,
  killAll,
  splitJson,
  decodeWithCbor2,
  encodeWithCbor2,
};
