'use strict';
/**
 * Real peers for the tests: libcoap's coap-client-notls, Debian's python3-cbor2 as an independent
 * CBOR decoder, and a raw UDP socket for byte-level exchanges. A missing tool fails the test with
 * the package to install; nothing is skipped.
 */
const { spawn, execFileSync } = require('node:child_process');
const dgram = require('node:dgram');

const COAP_CLIENT = 'coap-client-notls';
const SYSTEM_PYTHON = '/usr/bin/python3';

/** Runs coap-client-notls; resolves {code, stdout (Buffer), stderr}. Killed after timeoutMs. */
function coapClient(args, { timeoutMs = 15000, input } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(COAP_CLIENT, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    const out = [];
    let err = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.stdout.on('data', (chunk) => out.push(chunk));
    child.stderr.on('data', (chunk) => (err += chunk));
    child.on('error', (error) => {
      clearTimeout(timer);
      reject(error.code === 'ENOENT' ? new Error(`${COAP_CLIENT} is missing: apt-get install libcoap3-bin`) : error);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout: Buffer.concat(out), stderr: err });
    });
    child.stdin.end(input);
  });
}

/** Decodes CBOR with python3-cbor2 and returns it as JSON-compatible data plus Python type names. */
function decodeWithCbor2(buffer) {
  const script = [
    'import sys, json, cbor2',
    'v = cbor2.loads(sys.stdin.buffer.read())',
    'def types(x):',
    '    if isinstance(x, dict): return {k: types(w) for k, w in x.items()}',
    '    if isinstance(x, list): return [types(w) for w in x]',
    '    return type(x).__name__',
    'print(json.dumps({"value": v, "types": types(v)}))',
  ].join('\n');
  try {
    return JSON.parse(execFileSync(SYSTEM_PYTHON, ['-c', script], { input: buffer }).toString());
  } catch (error) {
    throw new Error(`python3-cbor2 could not decode (apt-get install python3-cbor2): ${error.message}`);
  }
}

/**
 * Sends datagrams from one UDP socket and collects what comes back.
 * `exchange(datagrams, {count, timeoutMs})` resolves with the answers received
 * (stops at `count` answers or at the timeout).
 */
async function udpPeer(port, address = '127.0.0.1') {
  const socket = dgram.createSocket(address.includes(':') ? 'udp6' : 'udp4');
  await new Promise((resolve) => socket.bind(0, resolve));
  const inbox = [];
  let waiter = null;
  socket.on('message', (message) => {
    inbox.push(message);
    if (waiter) waiter();
  });
  return {
    socket,
    send: (datagram) => new Promise((resolve) => socket.send(datagram, port, address, resolve)),
    /** Waits until `count` datagrams arrived in total since the last take(), or timeoutMs. */
    take(count, timeoutMs = 3000) {
      return new Promise((resolve) => {
        const done = () => {
          clearTimeout(timer);
          waiter = null;
          resolve(inbox.splice(0, inbox.length));
        };
        const timer = setTimeout(done, timeoutMs);
        waiter = () => inbox.length >= count && done();
        waiter();
      });
    },
    close: () => new Promise((resolve) => socket.close(resolve)),
  };
}

module.exports = { coapClient, decodeWithCbor2, udpPeer, COAP_CLIENT };

// ---- Observe (RFC 7641) helpers, added for test/integration/observe-*.test.js ----------------

const packet = require('coap-packet');
const { randomBytes } = require('node:crypto');

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `predicate` every 10 ms; resolves true as soon as it holds, false after timeoutMs. */
async function waitUntil(predicate, timeoutMs = 3000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await predicate()) return true;
    if (Date.now() >= deadline) return false;
    await sleep(10);
  }
}

/** A big-endian unsigned integer option value (RFC 7252 §3.2: empty is 0). */
function uintOf(value) {
  let n = 0;
  for (const byte of value) n = n * 256 + byte;
  return n;
}

/** The big-endian uint encoding CoAP options use (0 is the empty string). */
function uintBytes(n) {
  const bytes = [];
  while (n > 0) {
    bytes.unshift(n & 0xff);
    n = Math.floor(n / 256);
  }
  return Buffer.from(bytes);
}

/** The value of the first option `name` of a parsed packet, or undefined. */
function optionOf(parsed, name) {
  return parsed.options.find((option) => option.name === name)?.value;
}

/** The Observe value of a parsed packet, or undefined when it has none. */
function observeOf(parsed) {
  const value = optionOf(parsed, 'Observe');
  return value === undefined ? undefined : uintOf(value);
}

/** Block1/Block2 option value (RFC 7959 §2.2) → {num, more, szx, size}. */
function blockOf(value) {
  const n = uintOf(value);
  const szx = n & 7;
  return { num: n >> 4, more: (n & 8) !== 0, szx, size: 1 << (szx + 4) };
}

function blockValue(num, more, szx) {
  return uintBytes((num << 4) | (more ? 8 : 0) | szx);
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

/** coap-packet option list for a path and Uri-Query items. */
function uriOptions(path, query = []) {
  const options = [];
  for (const segment of path.split('/').filter((s) => s !== '')) options.push({ name: 'Uri-Path', value: Buffer.from(segment) });
  for (const item of query) options.push({ name: 'Uri-Query', value: Buffer.from(item) });
  return options;
}

let nextRawMessageId = Math.floor(Math.random() * 0x10000);

/**
 * A raw CoAP client on one UDP socket, for Observe tests. Every message the server sends is
 * parsed and filed under its token; the first one after a request is that request's response,
 * the others are notifications (retransmissions of one message ID are counted, not filed twice).
 * CON messages from the server are ACKed while `autoAck` is true (settable at any time).
 */
async function rawObserver(port, { autoAck = true, address = '127.0.0.1' } = {}) {
  const socket = dgram.createSocket(address.includes(':') ? 'udp6' : 'udp4');
  await new Promise((resolve) => socket.bind(0, resolve));
  const tokens = new Map(); // token hex → {messages, responses:Set, seen:Set of message IDs}
  const datagrams = []; // every parsed datagram, with its arrival time
  const retransmissions = new Map(); // message ID → times received beyond the first
  const entry = (hex) => {
    let e = tokens.get(hex);
    if (e === undefined) tokens.set(hex, (e = { messages: [], responses: new Set(), seen: new Set() }));
    return e;
  };
  const sendRaw = (fields) => new Promise((resolve) => socket.send(packet.generate(fields), port, address, resolve));
  const peer = {
    socket,
    autoAck,
    datagrams,
    retransmissions,
    get localPort() {
      return socket.address().port;
    },
    ack: (messageId) => sendRaw({ ack: true, code: '0.00', messageId }),
    reset: (messageId) => sendRaw({ reset: true, code: '0.00', messageId }),
    send: sendRaw,
    /** Everything received on a token that is not the response to one of our requests. */
    notifications(token) {
      const e = entry(token.toString('hex'));
      return e.messages.filter((m) => !e.responses.has(m));
    },
    /** Waits until `count` notifications arrived on the token (or timeoutMs); returns them all. */
    async nextNotifications(token, count, timeoutMs = 3000) {
      await waitUntil(() => peer.notifications(token).length >= count, timeoutMs);
      return peer.notifications(token);
    },
    /**
     * Sends a request and resolves with its response (the next message on its token), parsed,
     * with `body` (JSON payloads) and `observe`. Rejects after timeoutMs. Accept is JSON unless `accept: null`.
     */
    async request({ method = 'GET', path, query = [], token = randomBytes(4), confirmable = true, observe, accept = 50,
      contentFormat, payload, block2, options = [], timeoutMs = 3000 }) {
      const opts = [...uriOptions(path, query), ...options];
      if (observe !== undefined) opts.push({ name: 'Observe', value: uintBytes(observe) });
      if (accept !== null) opts.push({ name: 'Accept', value: uintBytes(accept) }); // null: no Accept (CBOR)
      if (block2 !== undefined) opts.push({ name: 'Block2', value: blockValue(block2.num, false, block2.szx) });
      let body = payload;
      if (body !== undefined && !Buffer.isBuffer(body)) {
        body = Buffer.from(JSON.stringify(body));
        contentFormat ??= 50;
      }
      if (contentFormat !== undefined) opts.push({ name: 'Content-Format', value: uintBytes(contentFormat) });
      const e = entry(token.toString('hex'));
      const start = e.messages.length;
      const messageId = nextRawMessageId = (nextRawMessageId + 1) & 0xffff;
      await sendRaw({ confirmable, code: method, messageId, token, options: opts, payload: body });
      if (!(await waitUntil(() => e.messages.length > start, timeoutMs))) {
        throw new Error(`no response to ${method} /${path} within ${timeoutMs} ms`);
      }
      const response = e.messages[start];
      e.responses.add(response);
      return response;
    },
    /** Registers a relation (Observe: 0); resolves {token, response}. */
    async observe(path, query = [], opts = {}) {
      const token = opts.token ?? randomBytes(4);
      const response = await peer.request({ ...opts, path, query, token, observe: 0 });
      return { token, response };
    },
    /** Deregisters (GET with Observe: 1 and the relation's token); resolves with the response. */
    deregister(token, path, query = [], opts = {}) {
      return peer.request({ ...opts, path, query, token, observe: 1 });
    },
    close: () => new Promise((resolve) => socket.close(resolve)),
  };
  socket.on('message', (datagram) => {
    let parsed;
    try {
      parsed = packet.parse(datagram);
    } catch {
      return;
    }
    parsed.at = Date.now();
    parsed.observe = parsed.code === '0.00' ? undefined : observeOf(parsed);
    parsed.body = undefined;
    if (optionOf(parsed, 'Content-Format') !== undefined && uintOf(optionOf(parsed, 'Content-Format')) === 50 && parsed.payload.length > 0) {
      try {
        parsed.body = JSON.parse(parsed.payload.toString());
      } catch {
        // a block of a larger body: not JSON on its own
      }
    }
    datagrams.push(parsed);
    if (parsed.confirmable && peer.autoAck) sendRaw({ ack: true, code: '0.00', messageId: parsed.messageId });
    if (parsed.code === '0.00') return;
    const e = entry(parsed.token.toString('hex'));
    if (!parsed.ack) {
      if (e.seen.has(parsed.messageId)) {
        retransmissions.set(parsed.messageId, (retransmissions.get(parsed.messageId) ?? 0) + 1);
        return;
      }
      e.seen.add(parsed.messageId);
    }
    e.messages.push(parsed);
  });
  return peer;
}

module.exports.sleep = sleep;
module.exports.waitUntil = waitUntil;
module.exports.uintOf = uintOf;
module.exports.uintBytes = uintBytes;
module.exports.optionOf = optionOf;
module.exports.observeOf = observeOf;
module.exports.blockOf = blockOf;
module.exports.splitJson = splitJson;
module.exports.rawObserver = rawObserver;
