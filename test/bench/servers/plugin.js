'use strict';
// The plugin under test, in its own process, with one of two entry points:
// - "minimal": answers server:now at once with a prebuilt Kuzzle-shaped
//   response, so that what is measured is the plugin's own cost (request
//   mapping, Request construction, CBOR encoding, the CoAP message layer);
// - "double": test/support/hostDouble.js (Kuzzle's side of the contract:
//   Request, setResult, toJSON, realtime rooms, counted executions).
// Commands: stats, heap (after gc()), executions (per body.seq), publish
// (a broadcast, timed until the last datagram left the socket).
const dgram = require('node:dgram');
const fs = require('node:fs');
const inspector = require('node:inspector');
const v8 = require('node:v8');
const { performance } = require('node:perf_hooks');
const { serve } = require('../lib/procs');

const options = JSON.parse(process.argv[2] ?? '{}');
const clock = () => performance.timeOrigin + performance.now();

// Times a broadcast: every send gets a completion callback while `tracker.active`.
const tracker = { active: false, calls: 0, sent: 0, errors: 0, last: 0, waiter: null };
if (options.trackSends) {
  const send = dgram.Socket.prototype.send;
  dgram.Socket.prototype.send = function trackedSend(...args) {
    if (!tracker.active) return send.apply(this, args);
    const callback = typeof args[args.length - 1] === 'function' ? args.pop() : null;
    tracker.calls++;
    args.push((error) => {
      tracker.sent++;
      tracker.last = clock();
      if (error) tracker.errors++;
      tracker.waiter?.();
      callback?.(error);
    });
    return send.apply(this, args);
  };
}

const quiet = {};
for (const level of ['silly', 'debug', 'verbose', 'info', 'warn', 'error']) quiet[level] = () => {};
const coap = { host: '127.0.0.1', port: 0, ...options.coap };

// Executions per body.seq (the loss scenario checks "exactly once").
const executions = new Map();
function countExecution(request) {
  const seq = request?.input?.body?.seq;
  if (seq !== undefined) executions.set(seq, (executions.get(seq) ?? 0) + 1);
}

async function startMinimal() {
  const CoapProtocol = require('../../../dist');
  const { ClientConnection } = require('../../support/hostDouble');
  const objects = require('kuzzle-common-objects');
  const { nowResponse } = require('./payload');
  const protocol = new CoapProtocol();
  const entryPoint = {
    config: { maxRequestSize: '1MB', protocols: { coap } },
    newConnection() {},
    removeConnection() {},
    execute(request, callback) {
      countExecution(request);
      callback(nowResponse(request.id));
    },
  };
  const errors = Object.fromEntries(Object.entries(objects).filter(([name]) => name.endsWith('Error')));
  await protocol.init(entryPoint, { ClientConnection, Request: objects.Request, errors, log: quiet });
  return { protocol, publish: null };
}

async function startWithDouble() {
  const { startDouble } = require('../../support/hostDouble');
  const double = startDouble({ coap });
  Object.assign(double.context.log, quiet); // the double keeps every log line in memory
  const execute = double.entryPoint.execute;
  double.entryPoint.execute = function execute2(request, callback) { // same arity: the plugin reads it
    countExecution(request);
    return execute.call(this, request, callback);
  };
  await double.start();
  return { protocol: double.protocol, publish: double.publish, double };
}

// In-process V8 CPU profiler (what --cpu-prof uses), started and stopped around the measured part only.
const session = new inspector.Session();
const post = (method, params = {}) => new Promise((resolve, reject) => session.post(method, params, (error, result) => (error ? reject(error) : resolve(result))));
async function profileStart({ intervalUs = 200 } = {}) {
  session.connect();
  await post('Profiler.enable');
  await post('Profiler.setSamplingInterval', { interval: intervalUs });
  await post('Profiler.start');
  return true;
}
async function profileStop({ file }) {
  const { profile } = await post('Profiler.stop');
  await post('Profiler.disable');
  session.disconnect();
  fs.writeFileSync(file, JSON.stringify(profile));
  return file;
}

/**
 * Self size of the live heap by kind of object (constructor name; strings,
 * closures, arrays, code, hash tables by V8 type), from a heap snapshot.
 */
function heapByType() {
  for (let i = 0; i < 3; i++) global.gc?.();
  const file = v8.writeHeapSnapshot(`/tmp/bench-heap-${process.pid}.heapsnapshot`);
  let snapshot;
  try {
    snapshot = JSON.parse(fs.readFileSync(file, 'utf8'));
  } finally {
    fs.unlinkSync(file);
  }
  const { node_fields: fields, node_types: [types] } = snapshot.snapshot.meta;
  const width = fields.length;
  const iType = fields.indexOf('type'), iName = fields.indexOf('name'), iSize = fields.indexOf('self_size');
  const out = {};
  for (let i = 0; i < snapshot.nodes.length; i += width) {
    const type = types[snapshot.nodes[i + iType]];
    const name = snapshot.strings[snapshot.nodes[i + iName]];
    const key = type === 'object' || type === 'closure' ? `${type} ${name}` : type === 'array' || type === 'hidden' || type === 'object shape' ? `${type} ${name.slice(0, 40)}` : type;
    const entry = (out[key] ??= { count: 0, bytes: 0 });
    entry.count++;
    entry.bytes += snapshot.nodes[i + iSize];
  }
  return out;
}

function heap() {
  for (let i = 0; i < 3; i++) global.gc?.();
  const { heapUsed, external, arrayBuffers, rss } = process.memoryUsage();
  return { heapUsed, external, arrayBuffers, rss, gc: typeof global.gc === 'function' };
}

(async () => {
  const server = options.entry === 'double' ? await startWithDouble() : await startMinimal();
  const { protocol } = server;
  serve({
    stats: () => protocol.stats(),
    /** This process' CPU time so far (µs). */
    cpu: () => process.cpuUsage(),
    heap,
    heapByType,
    profileStart,
    profileStop,
    /** How many of seq 0..expected-1 ran once, more than once, never. */
    executions: ({ expected }) => {
      let once = 0, duplicated = 0, missing = 0;
      for (let seq = 0; seq < expected; seq++) {
        const count = executions.get(seq) ?? 0;
        if (count === 0) missing++;
        else if (count === 1) once++;
        else duplicated++;
      }
      return { expected, once, duplicated, missing, total: [...executions.values()].reduce((a, b) => a + b, 0) };
    },
    resetExecutions: () => { executions.clear(); return true; },
    calls: () => Object.fromEntries(server.double?.calls ?? []),
    /** One broadcast to every relation on index/collection; resolves when `expected` datagrams left, or after timeoutMs. */
    publish: async ({ index, collection, expected, timeoutMs = 10000 }) => {
      Object.assign(tracker, { active: true, calls: 0, sent: 0, errors: 0, last: 0 });
      const t0 = clock();
      const channels = server.publish(index, collection, { temperature: 21.5, at: Date.now() });
      const tReturned = clock();
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, timeoutMs);
        tracker.waiter = () => { if (tracker.sent >= expected) { clearTimeout(timer); resolve(); } };
        tracker.waiter();
      });
      tracker.active = false;
      tracker.waiter = null;
      return { t0, tReturned, tLastSent: tracker.last, calls: tracker.calls, sent: tracker.sent, errors: tracker.errors, channels: channels.length };
    },
    exit: () => protocol.close(),
  }, { port: protocol.listening?.port ?? null, securePort: protocol.listeningSecure?.port ?? null, pid: process.pid, entry: options.entry ?? 'minimal' });
})().catch((error) => {
  console.error(error);
  process.exit(1);
});
