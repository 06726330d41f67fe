'use strict';
/**
 * Pieces of the CoAP end-to-end tests (test/e2e/coap-*.test.js), which run the plugin in a real
 * Kuzzle (test/kuzzle-host) against real peers; the peers themselves are shared with the
 * integration tests (test/support: coap-client-notls in peers.js, raw UDP CoAP in raw.js):
 * - Kuzzle's HTTP API (`kuzzleHttp`), every call bounded in time;
 * - `coapJson`: one coap-client request with JSON answers;
 * - node-coap (`nodeCoap`), on an agent of its own that the caller closes;
 * - `rawEndpoint(port, {onCon, onNon})`: a raw CoAP peer that sends a request again when unanswered;
 * - `appSetup(app)`: a Kuzzle application setup (a plugin with a controller) for the host's
 *   proposed `appSetup` option (see coap-api.test.js).
 */
const { execFileSync } = require('node:child_process');
const { coapClient } = require('../support/peers');
const { nodeCoapRequest } = require('../support/nodeCoap');
const { CF, decodeBody, openRawPeer } = require('../support/raw');
const support = require('../support/util');

// ---------------------------------------------------------------------------------------------
// Processes and time

/** Processes whose parent is this one (ps), as "pid args" strings. */
function childProcesses() {
  return execFileSync('ps', ['-eo', 'pid=,ppid=,args='], { encoding: 'utf8' })
    .split('\n')
    .map((line) => line.trim().match(/^(\d+)\s+(\d+)\s+(.*)$/))
    .filter((m) => m && Number(m[2]) === process.pid && !m[3].startsWith('ps '))
    .map((m) => `${m[1]} ${m[3]}`);
}

/** support/util waitUntil, polling every 50 ms (probes here are HTTP calls and ps), for 5 s unless told. */
const waitUntil = (probe, ms = 5000) => support.waitUntil(probe, ms, 50);

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

/** The plugin's own CBOR encoder (the one under test, as a device would use any encoder). */
function encodeCbor(value) {
  return require('../../dist/codec/cbor').encodeCbor(value);
}

// ---------------------------------------------------------------------------------------------
// coap-client-notls

/**
 * One request with coap-client and JSON answers (-A 50). coap-client prints a 2.xx payload on
 * stdout and, for any other code, "c.dd <payload>" on stderr: resolves {code ('2.xx' when it
 * succeeded, as coap-client does not print success codes), body}.
 */
async function coapJson(url, { method = 'post', json, cborFile, jwt, extra = [], timeoutMs, binary } = {}) {
  const args = ['-m', method, '-A', String(CF.JSON), '-B', '8', ...extra];
  // coap-client (libcoap 4.3.1) silently drops a URI query longer than its ~100-byte buffer, so a
  // JWT (150+ bytes) cannot ride in the URI: it goes as a Uri-Query option (number 15) of its own.
  if (jwt !== undefined) args.push('-O', `15,jwt=${jwt}`);
  if (json !== undefined) args.push('-t', String(CF.JSON), '-e', JSON.stringify(json));
  if (cborFile !== undefined) args.push('-t', String(CF.CBOR), '-f', cborFile);
  args.push(url);
  const run = await coapClient(args, { timeoutMs, binary });
  const failed = run.stderr.match(/^(\d\.\d\d)(?: (.*))?$/m);
  if (failed) return { code: failed[1], body: failed[2] ? JSON.parse(failed[2]) : undefined, run };
  // libcoap writes its own log lines ("Dec 04 06:19:02.123 WARN ...", e.g. DTLS retransmissions
  // under loss) to stdout too, even right after a payload that ends without a newline: the payload
  // is what is left.
  const text = run.stdout.toString('utf8').replace(LIBCOAP_LOG, '').trim();
  if (run.exit !== 0 || text === '') throw new Error(`coap-client: exit ${run.exit} ${run.signal ?? ''}, stderr: ${run.stderr}`);
  return { code: '2.xx', body: JSON.parse(text), run };
}

const LIBCOAP_LOG = /[A-Z][a-z]{2} \d\d \d\d:\d\d:\d\d(\.\d+)? [A-Z]+ [^\n]*(\n|$)/g;

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

async function nodeCoap({ port, agent, method = 'POST', pathname, query, payload, contentFormat, accept, confirmable = true, timeoutMs = 8000 }) {
  const options = {};
  if (contentFormat !== undefined) options['Content-Format'] = contentFormat === CF.CBOR ? 'application/cbor' : 'application/json';
  if (accept !== undefined) options.Accept = accept === CF.CBOR ? 'application/cbor' : 'application/json';
  const res = await nodeCoapRequest({ hostname: '127.0.0.1', port, method, pathname, query, agent, confirmable }, { options, body: payload, timeoutMs });
  // node-coap gives known Content-Formats by name ('application/cbor'), others as numbers
  const cf = res.headers['Content-Format'];
  const contentFormatValue = typeof cf === 'string' ? NODE_COAP_FORMATS[cf] ?? cf : cf;
  const body = decodeBody(res.payload, contentFormatValue);
  return { code: res.code, options: res.options, payload: res.payload, contentFormat: contentFormatValue, body, echoed: res.echoed };
}

// ---------------------------------------------------------------------------------------------
// A raw CoAP endpoint (test/support/raw.js)

/**
 * A raw CoAP peer for these tests: `behaviour` says what it answers to the server's CON messages
 * (onCon: 'ack' | 'ignore' | 'rst') and NON ones (onNon: 'none' | 'rst'); a request unanswered
 * within 2 s is sent again (same message ID), twice at most.
 */
const rawEndpoint = (port, behaviour = {}) => openRawPeer(port, { ...behaviour, defaults: { timeoutMs: 2000, retries: 2 } });

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

/**
 * Writes a document over Kuzzle's HTTP API at `httpUrl` and waits (10 s) for the coap-client
 * observer `client` to print its notification after line `from`; resolves {notification, ms}:
 * the notification and the time from the write until it arrived.
 */
async function writeAndAwaitNotification({ client, httpUrl, index, collection, body, from }) {
  const written = Date.now();
  const response = await fetch(`${httpUrl}/${index}/${collection}/_create`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(10000),
  });
  const created = await response.json();
  if (created.status !== 200) throw new Error(`document:create answered ${JSON.stringify(created)}`);
  const line = await client.waitLine((l) => l.stream === 'stdout' && l.text.includes(`"${created.result._id}"`), 10000, from);
  return { notification: lineJson(line), ms: line.at - written, written };
}

module.exports = {
  E2E_PLUGIN,
  appSetup,
  childProcesses,
  coapJson,
  encodeCbor,
  fetchBlockwise,
  kuzzleHttp,
  lineJson,
  nodeCoap,
  rawEndpoint,
  waitUntil,
  writeAndAwaitNotification,
};
