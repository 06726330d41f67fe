'use strict';
// Just enough CoAP framing for the bench's clients (RFC 7252 §3), written by
// hand so that the load generator spends its core on sending, not encoding.

const TYPE = { CON: 0, NON: 1, ACK: 2, RST: 3 };
const METHOD = { GET: 1, POST: 2 };
const OPTION = { OBSERVE: 6, URI_PATH: 11, CONTENT_FORMAT: 12, URI_QUERY: 15, ACCEPT: 17, ECHO: 252 };

function uintBytes(n) {
  const bytes = [];
  while (n > 0) {
    bytes.unshift(n & 0xff);
    n = Math.floor(n / 256);
  }
  return Buffer.from(bytes);
}

const nibble = (n) => (n < 13 ? n : n < 269 ? 13 : 14);
function extended(n) {
  if (n < 13) return [];
  if (n < 269) return [n - 13];
  return [(n - 269) >> 8, (n - 269) & 0xff];
}

/** options: [[number, Buffer|string|number], ...] in any order. */
function encodeOptions(options) {
  const sorted = options
    .map(([number, value]) => [number, typeof value === 'number' ? uintBytes(value) : Buffer.from(value)])
    .sort((a, b) => a[0] - b[0]);
  const parts = [];
  let previous = 0;
  for (const [number, value] of sorted) {
    const delta = number - previous;
    parts.push(Buffer.from([(nibble(delta) << 4) | nibble(value.length), ...extended(delta), ...extended(value.length)]), value);
    previous = number;
  }
  return Buffer.concat(parts);
}

/** A whole message; token up to 8 bytes. */
function encodeMessage({ type, code, mid, token = Buffer.alloc(0), options = [], payload = null }) {
  const head = Buffer.from([0x40 | (type << 4) | token.length, code, mid >> 8, mid & 0xff]);
  const parts = [head, token, encodeOptions(options)];
  if (payload !== null && payload.length > 0) parts.push(Buffer.from([0xff]), payload);
  return Buffer.concat(parts);
}

/** The options of a request to /path?query with an optional payload in Content-Format `format`. */
function requestOptions({ path, query = [], format, accept, observe }) {
  const options = path.map((segment) => [OPTION.URI_PATH, segment]);
  for (const item of query) options.push([OPTION.URI_QUERY, item]);
  if (format !== undefined) options.push([OPTION.CONTENT_FORMAT, format]);
  if (accept !== undefined) options.push([OPTION.ACCEPT, accept]);
  if (observe !== undefined) options.push([OPTION.OBSERVE, observe]);
  return options;
}

/**
 * A request template with a 4-byte token: `make(mid, token32, payload?)`
 * returns a fresh buffer (a sent buffer must not be reused: dgram may still
 * hold it, and a retransmission must repeat the same bytes).
 */
function requestTemplate({ type = TYPE.CON, method = METHOD.POST, ...rest }) {
  const options = encodeOptions(requestOptions(rest));
  const headLength = 4 + 4 + options.length;
  return (mid, token, payload = null) => {
    const length = headLength + (payload !== null && payload.length > 0 ? 1 + payload.length : 0);
    const out = Buffer.allocUnsafe(length);
    out[0] = 0x44 | (type << 4);
    out[1] = method;
    out[2] = mid >> 8;
    out[3] = mid & 0xff;
    out.writeUInt32BE(token >>> 0, 4);
    options.copy(out, 8);
    if (length > headLength) {
      out[headLength] = 0xff;
      payload.copy(out, headLength + 1);
    }
    return out;
  };
}

function emptyAck(mid) {
  return Buffer.from([0x60, 0x00, mid >> 8, mid & 0xff]);
}

/** The value of option `number` in a received message, or undefined (first occurrence). */
function findOption(message, number) {
  const tkl = message[0] & 0x0f;
  let pos = 4 + tkl;
  let current = 0;
  while (pos < message.length && message[pos] !== 0xff) {
    const byte = message[pos++];
    let delta = byte >> 4;
    let length = byte & 0x0f;
    if (delta === 13) delta = 13 + message[pos++];
    else if (delta === 14) { delta = 269 + message.readUInt16BE(pos); pos += 2; }
    if (length === 13) length = 13 + message[pos++];
    else if (length === 14) { length = 269 + message.readUInt16BE(pos); pos += 2; }
    current += delta;
    if (current === number) return message.subarray(pos, pos + length);
    if (current > number) return undefined;
    pos += length;
  }
  return undefined;
}

/**
 * Shows that a client endpoint receives at its address, as a device does once (RFC 9175): GET
 * /.well-known/core, repeated with the Echo value of a 4.01; each step retransmitted every 500 ms
 * (a burst of endpoints can overflow a socket queue). Resolves true once answered, false if never.
 * `nextMid()` gives the endpoint's message IDs, so that later requests never reuse these.
 */
function verifyEndpoint(socket, port, host, nextMid) {
  return new Promise((resolve) => {
    let datagram = null;
    let tries = 0;
    const send = (echo) => {
      const options = [[OPTION.URI_PATH, '.well-known'], [OPTION.URI_PATH, 'core']];
      if (echo !== undefined) options.push([OPTION.ECHO, echo]);
      datagram = encodeMessage({ type: TYPE.CON, code: METHOD.GET, mid: nextMid(), options });
      tries = 0;
      socket.send(datagram, port, host);
    };
    const done = (verified) => {
      clearInterval(timer);
      socket.off('message', onMessage);
      resolve(verified);
    };
    const onMessage = (message) => {
      if (message.length < 4 || message[1] === 0 || message.readUInt16BE(2) !== datagram.readUInt16BE(2)) return;
      const echo = message[1] === 0x81 ? findOption(message, OPTION.ECHO) : undefined;
      if (echo === undefined) done(true);
      else send(Buffer.from(echo));
    };
    const timer = setInterval(() => {
      if (++tries > 8) done(false);
      else socket.send(datagram, port, host);
    }, 500);
    socket.on('message', onMessage);
    send();
  });
}

const codeText = (code) => `${code >> 5}.${String(code & 0x1f).padStart(2, '0')}`;

module.exports = { TYPE, METHOD, OPTION, encodeMessage, encodeOptions, requestTemplate, emptyAck, findOption, codeText, uintBytes, verifyEndpoint };
