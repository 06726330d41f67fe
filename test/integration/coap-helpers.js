'use strict';
/**
 * Shared helpers of the integration tests (not a test file: node --test picks *.test.js only).
 *
 * - `bootDouble(options)`: the Kuzzle double of test/support/hostDouble.js, started on a free port;
 * - `coap(port, target, flags)`: libcoap's coap-client-notls at verbosity 7, with its exchanges
 *   parsed from the log and the payload it writes with -o;
 * - `rawClient(port)`: a byte-level CoAP client on one UDP socket (coap-packet framing);
 * - `encodeWithCbor2(value)`: Debian's python3-cbor2 as an independent CBOR encoder.
 */
const dgram = require('node:dgram');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { randomBytes } = require('node:crypto');
const { execFileSync } = require('node:child_process');
const packet = require('coap-packet');
const { startDouble } = require('../support/hostDouble');
const { coapClient, decodeWithCbor2 } = require('../support/peers');

/** Short protocol timings for tests. */
const FAST = Object.freeze({
  piggybackWindowMs: 200,
  retransmission: { ackTimeoutMs: 200, ackRandomFactor: 1, maxRetransmit: 2 },
});

async function bootDouble(options = {}) {
  const double = startDouble(options);
  const port = await double.start();
  return { double, port };
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `predicate` every 20 ms; true as soon as it holds, false after timeoutMs. */
async function waitUntil(predicate, timeoutMs = 3000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (predicate()) return true;
    if (Date.now() >= deadline) return false;
    await sleep(20);
  }
}

const tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'coap-it-'));
process.on('exit', () => fs.rmSync(tmpDir, { recursive: true, force: true }));
let tmpCount = 0;

/** A file under a per-process temporary directory, removed at exit. */
function tmpFile(content) {
  const file = path.join(tmpDir, `f${++tmpCount}`);
  if (content !== undefined) fs.writeFileSync(file, content);
  return file;
}

// ---- python3-cbor2 -------------------------------------------------------------------------

/** Encodes JSON-compatible data with python3-cbor2 (an encoder independent of the plugin's). */
function encodeWithCbor2(value) {
  const script = 'import sys, json, cbor2\nsys.stdout.buffer.write(cbor2.dumps(json.loads(sys.stdin.read())))';
  try {
    return execFileSync('/usr/bin/python3', ['-c', script], { input: JSON.stringify(value) });
  } catch (error) {
    throw new Error(`python3-cbor2 could not encode (apt-get install python3-cbor2): ${error.message}`);
  }
}

// ---- coap-client-notls ----------------------------------------------------------------------

const MESSAGE_LINE = /^v:1 t:(CON|NON|ACK|RST) c:(\S+) i:([0-9a-f]+) \{([0-9a-f]*)\} \[ ?(.*?) ?\]( :: .*)?$/;

/**
 * Runs coap-client-notls against 127.0.0.1:port (or `host`) with `-v 7` and `-o <file>`.
 * Resolves { exit, sent, received, last, payload, stderr }: `sent` and `received` are the
 * messages of the log ({type, code, mid, token, options (raw text)}), `last` the last response
 * received that is not an empty ACK, `payload` what coap-client wrote with -o (2.xx bodies only;
 * coap-client prints error bodies on stderr after the code).
 */
async function coap(port, target, flags = [], { host = '127.0.0.1', timeoutS = 5, input } = {}) {
  const out = tmpFile();
  const authority = host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
  const args = ['-B', String(timeoutS), '-v', '7', '-o', out, ...flags, `coap://${authority}${target}`];
  const run = await coapClient(args, { timeoutMs: (timeoutS + 5) * 1000, input });
  const sent = [];
  const received = [];
  let direction = null;
  for (const line of run.stdout.toString('latin1').split('\n')) {
    if (/ sent \d+ bytes$/.test(line)) direction = sent;
    else if (/ received \d+ bytes$/.test(line)) direction = received;
    const match = MESSAGE_LINE.exec(line);
    if (match && direction) {
      const [, type, code, mid, token, options] = match;
      direction.push({ type, code, mid: parseInt(mid, 16), token, options });
      direction = null;
    }
  }
  const responses = received.filter((m) => m.code !== '0.00');
  const payload = fs.existsSync(out) ? fs.readFileSync(out) : null;
  return { exit: run.code, signal: run.signal, sent, received, last: responses.at(-1), payload, stderr: run.stderr, log: run.stdout.toString('latin1') };
}

/** The text of option `name` in a coap-client log line's option list, e.g. option(m, 'Size1') → '4096'. */
function logOption(message, name) {
  const match = new RegExp(`(?:^|, )${name}:([^,]*)`).exec(message?.options ?? '');
  return match ? match[1] : undefined;
}

/** The JSON error body coap-client printed on stderr after the response code ("4.00 {...}"). */
function stderrJson(stderr) {
  const start = stderr.indexOf('{');
  assertLike(start !== -1, `no JSON body on coap-client's stderr: ${JSON.stringify(stderr)}`);
  return JSON.parse(stderr.slice(start, stderr.lastIndexOf('}') + 1));
}

function assertLike(condition, message) {
  if (!condition) throw new Error(message);
}

// ---- raw CoAP over UDP --------------------------------------------------------------------

/** Big-endian uint option value (RFC 7252 §3.2: 0 is the empty string). */
function uint(n) {
  const bytes = [];
  for (; n > 0; n = Math.floor(n / 256)) bytes.unshift(n % 256);
  return Buffer.from(bytes);
}

function readUint(value) {
  let n = 0;
  for (const byte of value ?? []) n = n * 256 + byte;
  return n;
}

/** Block option value (RFC 7959 §2.2). */
const blockValue = (num, more, szx) => uint(num * 16 + (more ? 8 : 0) + szx);
const readBlock = (value) => {
  const n = readUint(value);
  return { num: Math.floor(n / 16), more: (n & 8) !== 0, szx: n & 7, size: 1 << ((n & 7) + 4) };
};

const TYPE_NAMES = ['CON', 'NON', 'ACK', 'RST'];
let nextMessageId = Math.floor(Math.random() * 0x10000);

/**
 * A raw CoAP peer on its own UDP socket. Every datagram received is kept in `inbox` as
 * {raw, at, type, code, mid, token, options, payload} (code 'unparsable' when coap-packet fails).
 */
async function rawClient(port, address = '127.0.0.1') {
  const socket = dgram.createSocket(address.includes(':') ? 'udp6' : 'udp4');
  await new Promise((resolve, reject) => {
    socket.once('error', reject);
    socket.bind(0, () => resolve());
  });
  const inbox = [];
  socket.on('message', (raw) => {
    const entry = { raw, at: Date.now(), type: TYPE_NAMES[(raw[0] >> 4) & 3], code: 'unparsable' };
    try {
      const parsed = packet.parse(raw);
      Object.assign(entry, { code: parsed.code, mid: parsed.messageId, token: parsed.token, options: parsed.options, payload: parsed.payload });
    } catch {
      // kept as unparsable
    }
    inbox.push(entry);
  });
  const sendRaw = (datagram) =>
    new Promise((resolve, reject) => socket.send(datagram, port, address, (error) => (error ? reject(error) : resolve(datagram))));

  const client = {
    socket,
    inbox,
    get localPort() {
      return socket.address().port;
    },
    sendRaw,
    /**
     * Builds and sends a request. `path` like '/api/server/now', `query` a list of items,
     * `options` extra coap-packet options ({name, value}). Resolves {mid, token, datagram}.
     */
    async send({ method = 'POST', path: target = '/', query = [], type = 'CON', mid, token = randomBytes(4), options = [],
      payload, contentFormat, accept, block1, block2, size1, size2 } = {}) {
      const opts = [];
      for (const segment of target.split('/').filter((s) => s !== '')) opts.push({ name: 'Uri-Path', value: Buffer.from(segment) });
      for (const item of query) opts.push({ name: 'Uri-Query', value: Buffer.from(item) });
      if (contentFormat !== undefined) opts.push({ name: 'Content-Format', value: uint(contentFormat) });
      if (accept !== undefined) opts.push({ name: 'Accept', value: uint(accept) });
      if (block1 !== undefined) opts.push({ name: 'Block1', value: blockValue(block1.num, block1.more, block1.szx) });
      if (block2 !== undefined) opts.push({ name: 'Block2', value: blockValue(block2.num, false, block2.szx) });
      if (size1 !== undefined) opts.push({ name: 'Size1', value: uint(size1) });
      if (size2 !== undefined) opts.push({ name: 'Size2', value: uint(size2) });
      opts.push(...options);
      const messageId = mid ?? (nextMessageId = (nextMessageId + 1) & 0xffff);
      const datagram = packet.generate(
        { confirmable: type === 'CON', code: method, messageId, token, options: opts, payload: payload ?? Buffer.alloc(0) },
        65000,
      );
      await sendRaw(datagram);
      return { mid: messageId, token, datagram };
    },
    /** Resolves the first inbox entry matching `predicate`; rejects after timeoutMs. */
    async waitFor(predicate, timeoutMs = 3000, what = 'a datagram') {
      let found;
      const ok = await waitUntil(() => (found = inbox.find(predicate)) !== undefined, timeoutMs);
      if (!ok) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; inbox: ${inbox.map(describe).join(' | ') || 'empty'}`);
      return found;
    },
    /** Waits `ms`, then returns every inbox entry matching `predicate`. */
    async collect(predicate, ms) {
      await sleep(ms);
      return inbox.filter(predicate);
    },
    /** Sends a request and resolves its response: the first non-empty message on its token. */
    async request(fields, timeoutMs = 3000) {
      const sent = await client.send(fields);
      const response = await client.waitFor(
        (m) => m.code !== '0.00' && m.token?.equals(sent.token), timeoutMs, `the response to ${fields.method ?? 'POST'} ${fields.path}`);
      return { ...response, sent };
    },
    /** Forgets what was received so far. */
    clear: () => inbox.splice(0, inbox.length),
    ack: (mid) => sendRaw(packet.generate({ ack: true, code: '0.00', messageId: mid })),
    reset: (mid) => sendRaw(packet.generate({ reset: true, code: '0.00', messageId: mid })),
    close: () => new Promise((resolve) => socket.close(resolve)),
  };
  return client;
}

function describe(m) {
  return `${m.type} ${m.code} mid=${m.mid} token=${m.token?.toString('hex') ?? '?'}`;
}

/** Value of the first option `name` (coap-packet name, or the number as a string) of an inbox entry. */
function option(message, name) {
  return message.options?.find((o) => o.name === name)?.value;
}

/** A JSON payload of an inbox entry. */
const json = (message) => JSON.parse(message.payload.toString('utf8'));

/** Decodes a CBOR payload with python3-cbor2: {value, types}. */
const cbor2 = (buffer) => decodeWithCbor2(buffer);

/** The ~3 KB result of the double's server:info (test/support/hostDouble.js `bigResult`). */
function bigResult() {
  const services = {};
  for (let i = 0; i < 60; i++) services[`service-${i}`] = { version: `7.${i}.0`, status: 'green', nodes: i };
  return { serverInfo: { kuzzle: { version: '2.56.0', services } } };
}

/** Ids of the double's connections, as a Set, to diff before/after a request. */
const connectionIds = (double) => new Set(double.connections.keys());

module.exports = {
  FAST,
  bootDouble,
  sleep,
  waitUntil,
  tmpFile,
  encodeWithCbor2,
  coap,
  logOption,
  stderrJson,
  uint,
  readUint,
  readBlock,
  rawClient,
  option,
  json,
  cbor2,
  bigResult,
  connectionIds,
};
