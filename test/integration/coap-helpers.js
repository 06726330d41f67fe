'use strict';
/**
 * Helpers of the integration tests (not a test file: node --test picks *.test.js only), on top of
 * the shared ones of test/support (peers.js, raw.js, util.js):
 *
 * - `bootDouble(options)`: the Kuzzle double of test/support/hostDouble.js, started on a free port;
 * - `coap(port, target, flags)`: libcoap's coap-client-notls at verbosity 7, with its exchanges
 *   parsed from the log and the payload it writes with -o;
 * - `rawClient(port)`: a raw CoAP peer that answers nothing by itself (the test sends every ACK/RST);
 * - `rawObserver(port, options)`: a raw CoAP peer for Observe, GET with Accept JSON by default.
 */
const fs = require('node:fs');
const { startDouble, bigResult } = require('../support/hostDouble');
const { coapClient } = require('../support/peers');
const { openRawPeer } = require('../support/raw');
const { tmpFile } = require('../support/util');

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
  return { exit: run.exit, signal: run.signal, sent, received, last: responses.at(-1), payload, stderr: run.stderr, log: run.stdout.toString('latin1') };
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

/** A raw CoAP peer (test/support/raw.js) that acknowledges nothing by itself. */
const rawClient = (port, address) => openRawPeer(port, { address, onCon: 'ignore' });

/** bootDouble(options) and a rawClient on its port: {double, port, raw, stop}, stop() closing both. */
async function bootWithRawClient(options) {
  const { double, port } = await bootDouble(options);
  const raw = await rawClient(port);
  const stop = async () => {
    await raw.close();
    await double.stop();
  };
  return { double, port, raw, stop };
}

/** A raw CoAP peer for Observe tests: GET, Accept JSON (`accept: null`: none) unless told; `onCon: 'ignore'` to leave CONs unacknowledged. */
const rawObserver = (port, options = {}) => openRawPeer(port, { ...options, defaults: { method: 'GET', accept: 50 } });

/** A JSON payload of a message. */
const json = (message) => JSON.parse(message.payload.toString('utf8'));

/** Ids of the double's connections, as a Set, to diff before/after a request. */
const connectionIds = (double) => new Set(double.connections.keys());

module.exports = {
  FAST,
  bootDouble,
  bootWithRawClient,
  coap,
  logOption,
  stderrJson,
  rawClient,
  rawObserver,
  json,
  bigResult,
  connectionIds,
};
