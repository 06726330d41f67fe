'use strict';
// The CoAP load generator: `sockets` client endpoints (one UDP socket each),
// each keeping `window` CON requests in flight, for `durationMs` or until
// `maxRequests` were issued, whichever comes first. A request is matched to
// its answer by token; retransmissions follow RFC 7252 §4.2 (ACK_TIMEOUT,
// ACK_RANDOM_FACTOR, MAX_RETRANSMIT); an empty ACK means a separate response
// follows (acknowledged when it comes). An endpoint that used up its 16-bit
// message IDs is replaced by a fresh socket (a new endpoint), so that no
// message ID is reused while the server may still remember it. Each endpoint
// first shows that it receives at its address, as a device does once: the
// plugin answers its first GET /.well-known/core with 4.01 + Echo (RFC 9175),
// and the same request with the Echo value verifies it for good. With
// `secure` ({identity, psk}), each endpoint is a coaps one: a DTLS session
// over its socket (lib/dtlsClient.js), shaken hands before anything is timed.
const dgram = require('node:dgram');
const { performance } = require('node:perf_hooks');
const { TYPE, requestTemplate, emptyAck, codeText, verifyEndpoint } = require('./coapWire');
const { Histogram } = require('./histogram');
const { loadSummary } = require('./util');
const { SecureEndpoint } = require('./dtlsClient');

const MID_BUDGET = 60000; // message IDs per endpoint before it is replaced
/**
 * @param {object} o
 * @param {number} o.port  @param {string} [o.host]
 * @param {string[]} o.path  @param {string[]} [o.query]
 * @param {number} [o.format] Content-Format of `payload`  @param {Buffer|Function} [o.payload] or seq => Buffer
 * @param {number} [o.sockets=32]  @param {number} [o.window=8]
 * @param {number} [o.durationMs=Infinity]  @param {number} [o.maxRequests=Infinity]
 * @param {number} [o.ackTimeoutMs=2000]  @param {number} [o.ackRandomFactor=1.5]  @param {number} [o.maxRetransmit=4]
 * @param {number} [o.drainMs=1000] how long in-flight requests may finish after the end (Infinity: all)
 * @param {{identity: string, psk: string}} [o.secure] coaps: a DTLS PSK session per endpoint
 */
async function coapLoad(o) {
  const host = o.host ?? '127.0.0.1';
  const window = o.window ?? 8;
  const durationMs = o.durationMs ?? Infinity;
  const maxRequests = o.maxRequests ?? Infinity;
  const ackTimeoutMs = o.ackTimeoutMs ?? 2000;
  const ackRandomFactor = o.ackRandomFactor ?? 1.5;
  const maxRetransmit = o.maxRetransmit ?? 4;
  const separateTimeoutMs = o.separateTimeoutMs ?? 30000;
  const make = requestTemplate({ path: o.path, query: o.query, format: o.format });
  const payloadOf = typeof o.payload === 'function' ? o.payload : () => o.payload ?? null;

  const histogram = new Histogram();
  const codes = {};
  const counters = { issued: 0, completed: 0, inWindow: 0, retransmissions: 0, gaveUp: 0, emptyAcks: 0, separate: 0, resets: 0, strays: 0, endpoints: 0, unverified: 0 };
  let running = true;
  let tStart = 0;
  let tEnd = Infinity;
  let busy = 0;
  let onIdle = null;

  // One lane per endpoint: a socket and `window` slots; token = slot (16 bits) | generation (16 bits).
  const lanes = [];
  const secure = o.secure ? { port: o.port, host, identity: o.secure.identity, psk: Buffer.from(o.secure.psk) } : null;
  /** [socket, ready]: the socket is the lane's at once, so that the end of the run closes it even if still opening. */
  function openSocket() {
    if (secure !== null) {
      const endpoint = new SecureEndpoint(secure);
      return [endpoint, endpoint.bind().then(() => endpoint.handshake())];
    }
    const socket = dgram.createSocket('udp4');
    socket.on('error', () => {});
    return [socket, new Promise((resolve) => socket.bind(0, '127.0.0.1', resolve))];
  }
  async function openLane(lane) {
    lane.used = 0;
    lane.mid = Math.floor(Math.random() * 0x10000);
    counters.endpoints++;
    const [socket, ready] = openSocket();
    lane.socket = socket;
    await ready;
    const verified = await verifyEndpoint(socket, o.port, host, () => {
      const mid = lane.mid;
      lane.mid = (mid + 1) & 0xffff;
      lane.used++;
      return mid;
    });
    if (!verified) counters.unverified++;
    socket.on('message', (message) => receive(lane, socket, message));
  }
  for (let i = 0; i < (o.sockets ?? 32); i++) {
    const lane = { socket: null, used: 0, mid: 0, busy: 0, draining: false, slots: [] };
    for (let s = 0; s < window; s++) lane.slots.push({ busy: false, gen: 0, mid: 0, buf: null, first: 0, deadline: 0, timeout: 0, tries: 0, acked: false });
    lanes.push(lane);
  }
  await Promise.all(lanes.map(openLane));

  function issue(lane, index) {
    if (!running || counters.issued >= maxRequests) return;
    if (lane.draining || lane.used >= MID_BUDGET) {
      lane.draining = true;
      if (lane.busy === 0) replace(lane);
      return;
    }
    const slot = lane.slots[index];
    const seq = counters.issued++;
    slot.gen = (slot.gen + 1) & 0xffff;
    slot.mid = lane.mid;
    lane.mid = (lane.mid + 1) & 0xffff;
    lane.used++;
    slot.buf = make(slot.mid, (index << 16) | slot.gen, payloadOf(seq));
    slot.busy = true;
    slot.acked = false;
    slot.tries = 0;
    slot.first = performance.now();
    slot.timeout = ackTimeoutMs * (1 + Math.random() * (ackRandomFactor - 1));
    slot.deadline = slot.first + slot.timeout;
    lane.busy++;
    busy++;
    lane.socket.send(slot.buf, o.port, host);
  }

  function replace(lane) {
    const old = lane.socket;
    lane.socket = null;
    old.close();
    openLane(lane).then(() => {
      lane.draining = false;
      for (let s = 0; s < window; s++) issue(lane, s);
    }, () => { counters.unverified++; }); // a coaps handshake that failed: the lane stops
  }

  function finish(lane, index, slot, code) {
    slot.busy = false;
    slot.buf = null;
    lane.busy--;
    busy--;
    if (code !== null) {
      const now = performance.now();
      histogram.record(now - slot.first);
      codes[codeText(code)] = (codes[codeText(code)] ?? 0) + 1;
      counters.completed++;
      if (now <= tEnd) counters.inWindow++;
    }
    issue(lane, index);
    if (busy === 0 && onIdle !== null) onIdle();
  }

  function receive(lane, socket, message) {
    if (message.length < 4) return;
    const type = (message[0] >> 4) & 3;
    const tkl = message[0] & 0x0f;
    const code = message[1];
    const mid = (message[2] << 8) | message[3];
    if (code === 0) {
      // Empty ACK (a separate response follows) or RST: matched by message ID.
      const index = lane.slots.findIndex((slot) => slot.busy && slot.mid === mid);
      if (index === -1) return;
      const slot = lane.slots[index];
      if (type === TYPE.ACK && !slot.acked) {
        counters.emptyAcks++;
        slot.acked = true;
        slot.deadline = performance.now() + separateTimeoutMs;
      } else if (type === TYPE.RST) {
        counters.resets++;
        finish(lane, index, slot, null);
      }
      return;
    }
    if (type === TYPE.CON) socket.send(emptyAck(mid), o.port, host); // a separate response: acknowledge it (again)
    if (tkl !== 4) return void counters.strays++;
    const index = message.readUInt16BE(4);
    const slot = lane.slots[index];
    if (slot === undefined || !slot.busy || slot.gen !== message.readUInt16BE(6) || (type === TYPE.ACK && slot.mid !== mid)) {
      counters.strays++; // a late duplicate
      return;
    }
    if (type !== TYPE.ACK) counters.separate++;
    finish(lane, index, slot, code);
  }

  // Retransmissions and give-ups, from one timer.
  const timer = setInterval(() => {
    const now = performance.now();
    for (const lane of lanes) {
      if (lane.socket === null) continue;
      for (let s = 0; s < window; s++) {
        const slot = lane.slots[s];
        if (!slot.busy || slot.deadline > now) continue;
        if (slot.acked || slot.tries >= maxRetransmit) {
          counters.gaveUp++;
          finish(lane, s, slot, null);
          continue;
        }
        slot.tries++;
        counters.retransmissions++;
        slot.timeout *= 2;
        slot.deadline = now + slot.timeout;
        lane.socket.send(slot.buf, o.port, host);
      }
    }
  }, Math.max(5, Math.min(50, ackTimeoutMs / 10)));

  const cpuStart = process.cpuUsage();
  tStart = performance.now();
  tEnd = tStart + durationMs;
  for (const lane of lanes) for (let s = 0; s < window; s++) issue(lane, s);
  await new Promise((resolve) => {
    onIdle = () => { if (counters.issued >= maxRequests) resolve(); }; // count-bounded: all issued and answered
    if (Number.isFinite(durationMs)) setTimeout(resolve, durationMs);
    if (busy === 0) resolve();
  });
  const tStopped = performance.now();
  const cpu = process.cpuUsage(cpuStart);
  running = false;
  // Let what is in flight land (or give up), so that the next run starts clean.
  const drainMs = o.drainMs ?? 1000;
  if (busy > 0) {
    await new Promise((resolve) => {
      onIdle = resolve;
      if (Number.isFinite(drainMs)) setTimeout(resolve, drainMs);
    });
  }
  const tDone = performance.now();
  clearInterval(timer);
  for (const lane of lanes) lane.socket?.close();

  return loadSummary({ counters, busy, codes, durationMs, tStart, tStopped, tDone, cpu, histogram });
}

module.exports = { coapLoad };
