'use strict';
/**
 * Shared pieces of the CoAP end-to-end tests (test/e2e/coap-*.test.js), which run the plugin in a
 * real Kuzzle (test/kuzzle-host) against real peers:
 * - Kuzzle's HTTP API (`kuzzleHttp`), every call bounded in time;
 * - libcoap's coap-client-notls, one-shot (`coapClient`) or long-running (`spawnCoapClient`, for
 *   Observe), every process tracked and killed by `killAll()` (call it in after()) or at exit;
 * - node-coap (`nodeCoap`), on an agent of its own that the caller closes;
 * - a raw CoAP endpoint on a UDP socket (`RawEndpoint`, with coap-packet), for what the other
 *   clients do not let a test control: Observe deregistration, RST, unacknowledged CON
 *   notifications, Block2 sizes, many tokens per socket;
 * - `appSetup(app)`: a Kuzzle application setup (a plugin with a controller) for the host's
 *   proposed `appSetup` option (see coap-api.test.js).
 */
const { spawn, execFileSync } = require('node:child_process');
const dgram = require('node:dgram');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const COAP_CLIENT = 'coap-client-notls';
const CF = { JSON: 50, CBOR: 60 };

// ---------------------------------------------------------------------------------------------
// Processes: every coap-client this file starts, killed at teardown (or when this process exits).

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

/** Processes whose parent is this one (ps), as "pid args" strings. */
function childProcesses() {
  return execFileSync('ps', ['-eo', 'pid=,ppid=,args='], { encoding: 'utf8' })
    .split('\n')
    .map((line) => line.trim().match(/^(\d+)\s+(\d+)\s+(.*)$/))
    .filter((m) => m && Number(m[2]) === process.pid && !m[3].startsWith('ps '))
    .map((m) => `${m[1]} ${m[3]}`);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Rejects with `what` if `promise` takes longer than ms. */
function within(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: no result within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** Polls `probe` until it returns a truthy value (returned) or ms elapse (then returns the last value). */
async function waitUntil(probe, ms = 5000, every = 50) {
  const deadline = Date.now() + ms;
  let value;
  for (;;) {
    value = await probe();
    if (value || Date.now() >= deadline) return value;
    await sleep(every);
  }
}

// ---------------------------------------------------------------------------------------------
// Kuzzle's HTTP API

/** `api(request, {token})` → Kuzzle's whole response; `ok(...)` → its result, asserting 200. */
function kuzzleHttp(host) {
  async function api(request, { token } = {}) {
    const response = await fetch(`${host.url}/_query`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
      body: JSON.stringify(request),
      signal: AbortSignal.timeout(10000),
    });
    return response.json();
  }
  async function ok(request, options) {
    const { status, error, result } = await api(request, options);
    if (status !== 200) {
      throw new Error(`HTTP ${request.controller}:${request.action} answered ${status}: ${error?.id} ${error?.message}`);
    }
    return result;
  }
  return { api, ok };
}

// ---------------------------------------------------------------------------------------------
// Payloads

let cborDecoder = null;
/** Decodes CBOR as the plugin's tests expect it: maps as objects, 64-bit integers as numbers. */
function decodeCbor(buffer) {
  if (cborDecoder === null) {
    const { Decoder } = require('cbor-x');
    cborDecoder = new Decoder({ mapsAsObjects: true, useRecords: false, int64AsNumber: true });
  }
  return cborDecoder.decode(buffer);
}

/** The plugin's own CBOR encoder (the one under test, as a device would use any encoder). */
function encodeCbor(value) {
  return require('../../dist/codec/cbor').encodeCbor(value);
}

function decodeBody(payload, contentFormat) {
  if (!payload || payload.length === 0) return undefined;
  if (contentFormat === CF.JSON) return JSON.parse(payload.toString('utf8'));
  return decodeCbor(payload);
}

let tmpDir = null;
/** Writes bytes to a temporary file (for coap-client -f); removed by removeTmp(). */
function tmpFile(name, bytes) {
  tmpDir ??= fs.mkdtempSync(path.join(os.tmpdir(), 'coap-e2e-'));
  const file = path.join(tmpDir, name);
  fs.writeFileSync(file, bytes);
  return file;
}
function removeTmp() {
  if (tmpDir !== null) fs.rmSync(tmpDir, { recursive: true, force: true });
  tmpDir = null;
}

// ---------------------------------------------------------------------------------------------
// coap-client-notls

function spawnTracked(args) {
  const child = spawn(COAP_CLIENT, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

/** Runs coap-client-notls to its end (SIGKILL after timeoutMs); resolves {exit, signal, stdout (Buffer), stderr}. */
function coapClient(args, { timeoutMs = 10000 } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawnTracked(args);
    const out = [];
    let err = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.stdout.on('data', (chunk) => out.push(chunk));
    child.stderr.on('data', (chunk) => (err += chunk));
    child.on('error', (error) => {
      clearTimeout(timer);
      reject(error.code === 'ENOENT' ? new Error(`${COAP_CLIENT} is missing: apt-get install libcoap3-bin`) : error);
    });
    child.on('close', (exit, signal) => {
      clearTimeout(timer);
      resolve({ exit, signal, stdout: Buffer.concat(out), stderr: err });
    });
  });
}

/**
 * One request with coap-client and JSON answers (-A 50). coap-client prints a 2.xx payload on
 * stdout and, for any other code, "c.dd <payload>" on stderr: resolves {code ('2.xx' when it
 * succeeded, as coap-client does not print success codes), body}.
 */
async function coapJson(url, { method = 'post', json, cborFile, jwt, extra = [], timeoutMs } = {}) {
  const args = ['-m', method, '-A', String(CF.JSON), '-B', '8', ...extra];
  // coap-client (libcoap 4.3.1) silently drops a URI query longer than its ~100-byte buffer, so a
  // JWT (150+ bytes) cannot ride in the URI: it goes as a Uri-Query option (number 15) of its own.
  if (jwt !== undefined) args.push('-O', `15,jwt=${jwt}`);
  if (json !== undefined) args.push('-t', String(CF.JSON), '-e', JSON.stringify(json));
  if (cborFile !== undefined) args.push('-t', String(CF.CBOR), '-f', cborFile);
  args.push(url);
  const run = await coapClient(args, { timeoutMs });
  const failed = run.stderr.match(/^(\d\.\d\d)(?: (.*))?$/m);
  if (failed) return { code: failed[1], body: failed[2] ? JSON.parse(failed[2]) : undefined, run };
  const text = run.stdout.toString('utf8').trim();
  if (run.exit !== 0 || text === '') throw new Error(`coap-client: exit ${run.exit} ${run.signal ?? ''}, stderr: ${run.stderr}`);
  return { code: '2.xx', body: JSON.parse(text), run };
}

/**
 * A long-running coap-client (Observe): `lines` collects every stdout/stderr line with its arrival
 * time; `waitLine(predicate, ms)` resolves with the first matching line (searching from `from`).
 */
function spawnCoapClient(args) {
  const child = spawnTracked(args);
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

/** JSON of a coap-client output line ("4.01 {...}" on stderr included). */
function lineJson(line) {
  const text = line.stream === 'stderr' ? line.text.replace(/^\d\.\d\d ?/, '') : line.text;
  return JSON.parse(text);
}

// ---------------------------------------------------------------------------------------------
// node-coap

/**
 * One request with node-coap; resolves {code, options, payload, contentFormat, body}.
 * `agent`: a `new coap.Agent({type: 'udp4'})` of the caller's (one endpoint), closed by the caller.
 */
const NODE_COAP_FORMATS = { 'application/json': CF.JSON, 'application/cbor': CF.CBOR, 'text/plain': 0 };

function nodeCoap({ port, agent, method = 'POST', pathname, query, payload, contentFormat, accept, confirmable = true, timeoutMs = 8000 }) {
  const coap = require('coap');
  return within(new Promise((resolve, reject) => {
    const req = coap.request({ hostname: '127.0.0.1', port, method, pathname, query, agent, confirmable });
    if (contentFormat !== undefined) req.setOption('Content-Format', contentFormat === CF.CBOR ? 'application/cbor' : 'application/json');
    if (accept !== undefined) req.setOption('Accept', accept === CF.CBOR ? 'application/cbor' : 'application/json');
    req.on('response', (res) => {
      // node-coap gives known Content-Formats by name ('application/cbor'), others as numbers
      const cf = res.headers['Content-Format'];
      const contentFormatValue = typeof cf === 'string' ? NODE_COAP_FORMATS[cf] ?? cf : cf;
      let body;
      try {
        body = decodeBody(res.payload, contentFormatValue);
      } catch (error) {
        reject(error);
        return;
      }
      resolve({ code: res.code, options: res.options, payload: res.payload, contentFormat: contentFormatValue, body });
    });
    req.on('error', reject);
    req.on('timeout', () => reject(new Error('node-coap timeout')));
    if (payload !== undefined) req.write(payload);
    req.end();
  }), timeoutMs, `node-coap ${method} ${pathname}`);
}

// ---------------------------------------------------------------------------------------------
// A raw CoAP endpoint on one UDP socket (coap-packet)

const packet = require('coap-packet');

function uintBuffer(n) {
  if (n === 0) return Buffer.alloc(0);
  const bytes = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  return Buffer.from(bytes);
}
const readUint = (buffer) => (buffer.length === 0 ? 0 : buffer.readUIntBE(0, buffer.length));

/** A received datagram, parsed, with helpers: option(name), observe, contentFormat, body(), block2. */
function describe(message, receivedAt) {
  const parsed = packet.parse(message);
  const option = (name) => parsed.options.find((o) => o.name === name)?.value;
  const observeValue = option('Observe');
  const cf = option('Content-Format');
  const block2 = option('Block2');
  const result = {
    ...parsed,
    receivedAt,
    type: parsed.ack ? 'ACK' : parsed.reset ? 'RST' : parsed.confirmable ? 'CON' : 'NON',
    tokenHex: parsed.token.toString('hex'),
    option,
    observe: observeValue === undefined ? undefined : readUint(observeValue),
    contentFormat: cf === undefined ? undefined : readUint(cf),
    block2: block2 === undefined ? undefined : { num: readUint(block2) >> 4, more: (readUint(block2) & 8) !== 0, szx: readUint(block2) & 7 },
  };
  result.body = () => decodeBody(result.payload, result.contentFormat);
  return result;
}

class RawEndpoint {
  /**
   * @param {number} port the server's
   * @param {object} [behaviour] what to answer to the server's CON messages ('ack' | 'ignore' | 'rst')
   *   and NON notifications ('none' | 'rst')
   */
  static async open(port, { onCon = 'ack', onNon = 'none' } = {}) {
    const socket = dgram.createSocket('udp4');
    await new Promise((resolve, reject) => {
      socket.once('error', reject);
      socket.bind(0, '127.0.0.1', resolve);
    });
    return new RawEndpoint(socket, port, { onCon, onNon });
  }

  constructor(socket, port, behaviour) {
    this.socket = socket;
    this.port = port;
    this.behaviour = behaviour;
    this.messages = [];
    this.waiters = new Set();
    this.nextMid = Math.floor(Math.random() * 0xffff);
    this.closed = false;
    socket.on('message', (message) => this.receive(message));
    socket.on('error', () => {});
  }

  get localPort() {
    return this.socket.address().port;
  }

  receive(datagram) {
    let message;
    try {
      message = describe(datagram, Date.now());
    } catch {
      return;
    }
    this.messages.push(message);
    if (message.type === 'CON') {
      if (this.behaviour.onCon === 'ack') this.sendEmpty('ack', message.messageId);
      if (this.behaviour.onCon === 'rst') this.sendEmpty('reset', message.messageId);
    }
    if (message.type === 'NON' && this.behaviour.onNon === 'rst') this.sendEmpty('reset', message.messageId);
    for (const waiter of this.waiters) waiter();
  }

  send(fields) {
    const datagram = packet.generate({ messageId: this.mid(), ...fields });
    return new Promise((resolve) => this.socket.send(datagram, this.port, '127.0.0.1', () => resolve(datagram)));
  }

  sendEmpty(kind, messageId) {
    if (this.closed) return;
    this.socket.send(packet.generate({ code: '0.00', messageId, [kind]: true }), this.port, '127.0.0.1');
  }

  mid() {
    this.nextMid = (this.nextMid + 1) & 0xffff;
    return this.nextMid;
  }

  /** Resolves with the first message (from index `from`) matching predicate, within ms. */
  waitFor(predicate, ms = 3000, from = 0) {
    return new Promise((resolve, reject) => {
      const check = () => {
        for (let i = from; i < this.messages.length; i++) {
          if (predicate(this.messages[i])) {
            done();
            resolve(this.messages[i]);
            return true;
          }
        }
        return false;
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`raw endpoint ${this.localPort}: no matching message within ${ms} ms (${this.messages.length} received)`));
      }, ms);
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(check);
      };
      if (!check()) this.waiters.add(check);
    });
  }

  /**
   * Sends a request and resolves with its response (piggybacked, or separate after an empty ACK).
   * method: 'GET' | 'POST' | 'FETCH' (or a code string); path: '/api/server/now'; query: ['a=b', ...].
   * A request without answer is sent again (same message ID) up to `retries` times.
   */
  async request({ method = 'POST', path: uriPath, query = [], payload, contentFormat, accept, observe, block2, token, confirmable = true, timeoutMs = 2000, retries = 2 }) {
    const options = [];
    for (const segment of uriPath.split('/').filter(Boolean)) options.push({ name: 'Uri-Path', value: Buffer.from(segment) });
    for (const item of query) options.push({ name: 'Uri-Query', value: Buffer.from(item) });
    if (observe !== undefined) options.push({ name: 'Observe', value: uintBuffer(observe) });
    if (contentFormat !== undefined) options.push({ name: 'Content-Format', value: uintBuffer(contentFormat) });
    if (accept !== undefined) options.push({ name: 'Accept', value: uintBuffer(accept) });
    if (block2 !== undefined) options.push({ name: 'Block2', value: uintBuffer((block2.num << 4) | block2.szx) });
    const tokenBuffer = token ?? Buffer.from(Math.floor(Math.random() * 0xffffffff).toString(16).padStart(8, '0'), 'hex');
    const tokenHex = tokenBuffer.toString('hex');
    const messageId = this.mid();
    const datagram = packet.generate({ code: method, messageId, token: tokenBuffer, confirmable, options, payload: payload ?? Buffer.alloc(0) });
    const from = this.messages.length;
    const isAnswer = (m) => m.tokenHex === tokenHex && m.code !== '0.00' && m.type !== 'RST';
    for (let attempt = 0; ; attempt++) {
      this.socket.send(datagram, this.port, '127.0.0.1');
      try {
        return await this.waitFor(isAnswer, timeoutMs, from);
      } catch (error) {
        if (attempt >= retries) throw error;
      }
    }
  }

  /** Messages of a token received after index `from`, answers and notifications alike. */
  ofToken(token, from = 0) {
    const hex = Buffer.isBuffer(token) ? token.toString('hex') : token;
    return this.messages.slice(from).filter((m) => m.tokenHex === hex && m.code !== '0.00');
  }

  async close() {
    if (this.closed) return;
    this.closed = true;
    await new Promise((resolve) => this.socket.close(resolve));
  }
}

/** Fetches a whole Block2 body with the raw endpoint, asking `szx` block sizes from block 0. */
async function fetchBlockwise(endpoint, request, szx) {
  const blocks = [];
  for (let num = 0; num < 10000; num++) {
    const response = await endpoint.request({ ...request, block2: { num, szx } });
    blocks.push(response);
    if (!response.block2?.more) break;
  }
  return { blocks, payload: Buffer.concat(blocks.map((b) => b.payload)), contentFormat: blocks[0].contentFormat };
}

// ---------------------------------------------------------------------------------------------
// Kuzzle application setup for the host's proposed `appSetup` option (coap-api.test.js)

const E2E_PLUGIN = 'coap-e2e';

/**
 * Registers, in a Kuzzle `Backend` before `app.start()`, a plugin named "coap-e2e" whose
 * controller "sensors" Kuzzle names "coap-e2e/sensors" (plugin controllers declared with the
 * `controllers` object are prefixed with the plugin name). Its action "read" echoes what it got.
 */
function appSetup(app) {
  class E2ePlugin {
    constructor() {
      this.controllers = { sensors: { read: 'read' } };
    }

    async init() {}

    async read(request) {
      return {
        controller: request.input.controller,
        action: request.input.action,
        args: request.input.args,
        body: request.input.body,
        user: request.context.user?._id ?? null,
        protocol: request.context.connection?.protocol ?? null,
      };
    }
  }
  app.plugin.use(new E2ePlugin(), { name: E2E_PLUGIN });
}

module.exports = {
  CF,
  COAP_CLIENT,
  E2E_PLUGIN,
  RawEndpoint,
  appSetup,
  childProcesses,
  coapClient,
  coapJson,
  decodeBody,
  decodeCbor,
  encodeCbor,
  fetchBlockwise,
  killAll,
  kuzzleHttp,
  lineJson,
  nodeCoap,
  removeTmp,
  sleep,
  spawnCoapClient,
  tmpFile,
  waitUntil,
  within,
};
