'use strict';
/**
 * Raw CoAP over UDP for the tests (coap-packet framing): option value codecs, payload decoding,
 * and `openRawPeer(port, options)`, a byte-level CoAP peer on one UDP socket that lets a test
 * control what the other clients do not (message IDs, tokens, duplicates, ACK/RST or silence,
 * Observe, Block1/Block2 sizes, many tokens per socket).
 */
const dgram = require('node:dgram');
const { randomBytes } = require('node:crypto');
const packet = require('coap-packet');
const { sleep } = require('./util');

/** Content-Format numbers (RFC 7252 §12.3, RFC 8949). */
const CF = Object.freeze({ JSON: 50, CBOR: 60 });

// ---- option values --------------------------------------------------------------------------

/** Big-endian uint option value (RFC 7252 §3.2: 0 is the empty string). */
function uint(n) {
  const bytes = [];
  for (; n > 0; n = Math.floor(n / 256)) bytes.unshift(n % 256);
  return Buffer.from(bytes);
}

/** The number of a uint option value (absent or empty: 0). */
function readUint(value) {
  let n = 0;
  for (const byte of value ?? []) n = n * 256 + byte;
  return n;
}

/** Block1/Block2 option value (RFC 7959 §2.2), and back: {num, more, szx, size}. */
const blockValue = (num, more, szx) => uint(num * 16 + (more ? 8 : 0) + szx);
function readBlock(value) {
  const n = readUint(value);
  return { num: Math.floor(n / 16), more: (n & 8) !== 0, szx: n & 7, size: 1 << ((n & 7) + 4) };
}

/** Value of the first option `name` (coap-packet name, or the number as a string) of a message. */
const option = (message, name) => message.options?.find((o) => o.name === name)?.value;

/** coap-packet options for a path ('/api/server/now' or 'api/server/now') and Uri-Query items. */
function uriOptions(path, query = []) {
  const options = [];
  for (const segment of path.split('/').filter((s) => s !== '')) options.push({ name: 'Uri-Path', value: Buffer.from(segment) });
  for (const item of query) options.push({ name: 'Uri-Query', value: Buffer.from(item) });
  return options;
}

// ---- payloads -------------------------------------------------------------------------------

let cborDecoder = null;
/** Decodes CBOR as the plugin's tests expect it: maps as objects, 64-bit integers as numbers. */
function decodeCbor(buffer) {
  if (cborDecoder === null) {
    const { Decoder } = require('cbor-x');
    cborDecoder = new Decoder({ mapsAsObjects: true, useRecords: false, int64AsNumber: true });
  }
  return cborDecoder.decode(buffer);
}

/** A payload as data: undefined when empty, JSON for Content-Format 50, CBOR otherwise. */
function decodeBody(payload, contentFormat) {
  if (!payload || payload.length === 0) return undefined;
  if (contentFormat === CF.JSON) return JSON.parse(payload.toString('utf8'));
  return decodeCbor(payload);
}

// ---- received datagrams ---------------------------------------------------------------------

const TYPES = ['CON', 'NON', 'ACK', 'RST'];

/**
 * A received datagram: {raw, at, type} and coap-packet's fields (code, messageId, token, options,
 * payload, confirmable, ack, reset), with tokenHex, observe, contentFormat, block2 ({num, more,
 * szx, size}) and `body` (decodeBody, on first read). Code 'unparsable' when coap-packet fails.
 */
function parseDatagram(raw, at) {
  const message = { raw, at, type: TYPES[(raw[0] >> 4) & 3], code: 'unparsable' };
  try {
    Object.assign(message, packet.parse(raw));
  } catch {
    return message;
  }
  const observe = option(message, 'Observe');
  const contentFormat = option(message, 'Content-Format');
  const block2 = option(message, 'Block2');
  message.tokenHex = message.token.toString('hex');
  message.observe = observe === undefined ? undefined : readUint(observe);
  message.contentFormat = contentFormat === undefined ? undefined : readUint(contentFormat);
  message.block2 = block2 === undefined ? undefined : readBlock(block2);
  let body;
  let decoded = false;
  Object.defineProperty(message, 'body', {
    get() {
      if (!decoded) {
        body = decodeBody(message.payload, message.contentFormat);
        decoded = true;
      }
      return body;
    },
  });
  return message;
}

/** onCon / onNon → the empty message sent back ('ignore', 'none': nothing). */
const EMPTY_REPLIES = { ack: 'ack', rst: 'reset' };

const describe = (m) => `${m.type} ${m.code} mid=${m.messageId} token=${m.tokenHex ?? '?'}`;

// ---- the peer -------------------------------------------------------------------------------

/**
 * A raw CoAP peer on its own UDP socket, talking to `address`:`port`.
 *
 * - `messages`: every datagram received (parseDatagram), retransmissions included;
 * - each token's messages are also filed once per message ID (a copy of a CON or NON is counted in
 *   `retransmissions`, message ID → copies beyond the first): the first one after a request is
 *   its response, the others are `notifications(token)`;
 * - `onCon`: what it answers to the server's CON messages, 'ack' | 'rst' | 'ignore'; `onNon`: to
 *   NON messages, 'none' | 'rst' (both settable at any time);
 * - `defaults`: request fields used where a request gives none (e.g. {method: 'GET', accept: 50},
 *   {timeoutMs: 2000, retries: 2});
 * - `verify` (default true): before resolving, the peer proves that it receives at its address, as
 *   a device does on its first large answer: a GET /.well-known/core gets 4.01 with an Echo value
 *   (RFC 9175), repeated with it, its answer. Tests of what unverified peers get pass false.
 *   What was received meanwhile is cleared.
 */
async function openRawPeer(port, { address = '127.0.0.1', onCon = 'ack', onNon = 'none', defaults = {}, verify = true } = {}) {
  const socket = dgram.createSocket(address.includes(':') ? 'udp6' : 'udp4');
  await new Promise((resolve, reject) => {
    socket.once('error', reject);
    socket.bind(0, () => {
      socket.off('error', reject);
      resolve();
    });
  });
  socket.on('error', () => {}); // a send error is its caller's

  const messages = [];
  const tokens = new Map(); // token hex → {messages (one per message ID), responses: Set, seen: Set of message IDs}
  const retransmissions = new Map();
  const waiters = new Set();
  let nextMessageId = Math.floor(Math.random() * 0x10000);
  let closed = false;

  const entry = (hex) => {
    let e = tokens.get(hex);
    if (e === undefined) tokens.set(hex, (e = { messages: [], responses: new Set(), seen: new Set() }));
    return e;
  };
  const sendRaw = (datagram) =>
    new Promise((resolve, reject) => socket.send(datagram, port, address, (error) => (error ? reject(error) : resolve(datagram))));
  const sendEmpty = (kind, messageId) => (closed ? Promise.resolve() : sendRaw(packet.generate({ code: '0.00', messageId, [kind]: true })));

  /** Resolves true as soon as condition() holds (now, or when a datagram arrives), false after ms. */
  const until = (condition, ms) =>
    new Promise((resolve) => {
      if (condition()) {
        resolve(true);
        return;
      }
      const finish = (result) => {
        clearTimeout(timer);
        waiters.delete(check);
        resolve(result);
      };
      const check = () => condition() && finish(true);
      const timer = setTimeout(() => finish(false), ms);
      waiters.add(check);
    });

  const withDefaults = (fields) => {
    const merged = { ...fields };
    for (const [name, value] of Object.entries(defaults)) if (merged[name] === undefined) merged[name] = value;
    return merged;
  };

  /**
   * A request datagram. `path` like '/api/server/now', `query` a list of items, `options` extra
   * coap-packet options ({name, value}); `payload` a Buffer, or data sent as JSON; `accept: null`
   * is no Accept. Returns {datagram, messageId, token}.
   */
  function build({ method = 'POST', path = '/', query = [], confirmable = true, messageId, token = randomBytes(4), options = [],
    payload, contentFormat, accept, observe, block1, block2, size1, size2 }) {
    if (payload !== undefined && !(payload instanceof Uint8Array)) {
      payload = Buffer.from(JSON.stringify(payload));
      contentFormat ??= CF.JSON;
    }
    const opts = uriOptions(path, query);
    if (observe !== undefined) opts.push({ name: 'Observe', value: uint(observe) });
    if (contentFormat !== undefined) opts.push({ name: 'Content-Format', value: uint(contentFormat) });
    if (accept !== undefined && accept !== null) opts.push({ name: 'Accept', value: uint(accept) });
    if (block1 !== undefined) opts.push({ name: 'Block1', value: blockValue(block1.num, block1.more, block1.szx) });
    if (block2 !== undefined) opts.push({ name: 'Block2', value: blockValue(block2.num, false, block2.szx) });
    if (size1 !== undefined) opts.push({ name: 'Size1', value: uint(size1) });
    if (size2 !== undefined) opts.push({ name: 'Size2', value: uint(size2) });
    opts.push(...options);
    messageId ??= nextMessageId = (nextMessageId + 1) & 0xffff;
    const datagram = packet.generate(
      { confirmable, code: method, messageId, token, options: opts, payload: payload ?? Buffer.alloc(0) },
      65000,
    );
    return { datagram, messageId, token };
  }

  const peer = {
    socket,
    messages,
    retransmissions,
    onCon,
    onNon,
    get localPort() {
      return socket.address().port;
    },
    sendRaw,
    ack: (messageId) => sendEmpty('ack', messageId),
    reset: (messageId) => sendEmpty('reset', messageId),

    /** Builds and sends a request (see build); resolves {datagram, messageId, token}. */
    async send(fields = {}) {
      const sent = build(withDefaults(fields));
      await sendRaw(sent.datagram);
      return sent;
    },

    /**
     * Sends a request and resolves with its response: the next message on its token, piggybacked
     * or separate. Unanswered after `timeoutMs` (default 3000), it is sent again (same message ID)
     * up to `retries` times (default 0), then rejects.
     */
    async request(fields) {
      const merged = withDefaults(fields);
      const { timeoutMs = 3000, retries = 0 } = merged;
      const { datagram, token } = build(merged);
      const e = entry(token.toString('hex'));
      const start = e.messages.length;
      for (let attempt = 0; ; attempt++) {
        await sendRaw(datagram);
        if (await until(() => e.messages.length > start, timeoutMs)) break;
        if (attempt >= retries) {
          throw new Error(`no response to ${merged.method ?? 'POST'} ${merged.path} within ${timeoutMs} ms (${attempt + 1} sent)`);
        }
      }
      const response = e.messages[start];
      e.responses.add(response);
      return response;
    },

    /** Resolves the first message (from index `from`) matching `predicate`; rejects after ms. */
    async waitFor(predicate, ms = 3000, { from = 0, what = 'a matching datagram' } = {}) {
      let found;
      const match = () => {
        for (let i = from; i < messages.length; i++) if (predicate(messages[i])) return (found = messages[i]);
        return undefined;
      };
      if (!(await until(match, ms))) {
        const received = messages.slice(from).slice(-20).map(describe).join(' | ') || 'nothing';
        throw new Error(`timed out after ${ms} ms waiting for ${what} on raw peer ${peer.localPort}; received: ${received}`);
      }
      return found;
    },

    /** Waits `ms`, then returns every message matching `predicate`. */
    async collect(predicate, ms) {
      await sleep(ms);
      return messages.filter(predicate);
    },

    /** Non-empty messages of a token (Buffer or hex) from index `from`, copies included. */
    ofToken(token, from = 0) {
      const hex = Buffer.isBuffer(token) ? token.toString('hex') : token;
      return messages.slice(from).filter((m) => m.tokenHex === hex && m.code !== '0.00');
    },

    /** Everything received on a token (one per message ID) that is not the response to a request. */
    notifications(token) {
      const e = entry(token.toString('hex'));
      return e.messages.filter((m) => !e.responses.has(m));
    },

    /** Waits until `count` notifications arrived on the token (or ms); returns them all. */
    async nextNotifications(token, count, ms = 3000) {
      await until(() => peer.notifications(token).length >= count, ms);
      return peer.notifications(token);
    },

    /** Registers a relation (GET with Observe: 0); resolves {token, response}. */
    async observe(path, query = [], opts = {}) {
      const token = opts.token ?? randomBytes(4);
      const response = await peer.request({ method: 'GET', ...opts, path, query, token, observe: 0 });
      return { token, response };
    },

    /** Deregisters (GET with Observe: 1 and the relation's token); resolves with the response. */
    deregister(token, path, query = [], opts = {}) {
      return peer.request({ method: 'GET', ...opts, path, query, token, observe: 1 });
    },

    /**
     * Sends a request; when the answer is 4.01 with an Echo option, repeats it with the value (a
     * new message ID, as libcoap does). Resolves {first, response}: the 4.01 (or null) and the answer.
     */
    async requestWithEcho(fields) {
      const first = await peer.request(fields);
      const echo = option(first, '252');
      if (first.code !== '4.01' || echo === undefined) return { first: null, response: first };
      const options = [...(fields.options ?? []), { name: '252', value: echo }];
      return { first, response: await peer.request({ ...fields, messageId: undefined, options }) };
    },

    /** Forgets what was received so far. */
    clear() {
      messages.length = 0;
      tokens.clear();
      retransmissions.clear();
    },

    async close() {
      if (closed) return;
      closed = true;
      await new Promise((resolve) => socket.close(resolve));
    },
  };

  socket.on('message', (raw) => {
    const message = parseDatagram(raw, Date.now());
    messages.push(message);
    if (message.code !== 'unparsable') {
      const reply = EMPTY_REPLIES[{ CON: peer.onCon, NON: peer.onNon }[message.type]];
      if (reply) sendEmpty(reply, message.messageId).catch(() => {});
      if (message.code !== '0.00') {
        const e = entry(message.tokenHex);
        const copy = !message.ack && e.seen.has(message.messageId);
        if (copy) retransmissions.set(message.messageId, (retransmissions.get(message.messageId) ?? 0) + 1);
        else {
          if (!message.ack) e.seen.add(message.messageId);
          e.messages.push(message);
        }
      }
    }
    for (const waiter of waiters) waiter();
  });
  if (verify) {
    const { response } = await peer.requestWithEcho({ method: 'GET', path: '/.well-known/core', accept: null, timeoutMs: 2000, retries: 2 });
    if (response.code !== '2.05') throw new Error(`raw peer: GET /.well-known/core answered ${response.code}, not 2.05`);
    peer.clear();
  }
  return peer;
}

module.exports = { CF, uint, readUint, blockValue, readBlock, option, uriOptions, decodeBody, openRawPeer };
