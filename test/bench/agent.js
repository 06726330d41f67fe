'use strict';
// The client process of the bench: load generators and device fleets run
// here, on their own core, driven by the bench over IPC.
const { serve } = require('./lib/procs');
const { coapLoad } = require('./lib/coapLoad');
const { httpLoad } = require('./lib/httpLoad');
const { Endpoints, requestTemplate } = require('./lib/exchanges');
const { handshakeLoad } = require('./lib/handshakes');

const JSON_FORMAT = 50;
const CBOR_FORMAT = 60;

/** Request bodies that cannot cross IPC as functions: named kinds. */
function coapPayload({ payloadKind, payloadJson, run }) {
  if (payloadKind === 'json') {
    const fixed = Buffer.from(JSON.stringify(payloadJson));
    return { format: JSON_FORMAT, payload: fixed };
  }
  if (payloadKind === 'cbor') {
    const { encodePayload } = require('../../dist/codec/contentFormat');
    return { format: CBOR_FORMAT, payload: encodePayload(CBOR_FORMAT, payloadJson) };
  }
  if (payloadKind === 'seq') {
    // One distinct document per request: {"seq":n,"run":"..."} (the loss scenario counts them).
    return { format: JSON_FORMAT, payload: (seq) => Buffer.from(`{"seq":${seq},"run":"${run}","temperature":21.5}`) };
  }
  return { format: undefined, payload: null };
}

function httpBody({ request, bodyKind, run }) {
  if (bodyKind === 'seq') return (seq) => ({ ...request, body: { seq, run, temperature: 21.5 } });
  return request;
}

const subscribe = (query, observe) => requestTemplate({ method: 1, path: ['api', 'realtime', 'subscribe'], query, observe });

let fleet = null;
let secureFleet = null; // coaps endpoints (one DTLS session each)
let armed = null;

serve({
  coapLoad: (args) => coapLoad({ ...args, ...coapPayload(args) }),
  httpLoad: (args) => httpLoad({ ...args, body: httpBody(args) }),

  /** Opens `count` endpoints (kept open) and sends one CON request from each of the first `count`. */
  idleEndpoints: async ({ port, offset = 0, count, path, concurrency = 128 }) => {
    fleet ??= new Endpoints(port);
    await fleet.open(offset + count);
    const template = requestTemplate({ path });
    const result = await fleet.run(fleet.lanes.slice(offset, offset + count).map((lane) => ({ lane, template })), { concurrency });
    return { ...result, unverified: fleet.unverified };
  },

  /**
   * Registers `perEndpoint` observe relations (GET + Observe: 0) from each of the endpoints
   * offset..offset+endpoints-1; those opened now talk to host:port.
   */
  observe: async ({ port, host = '127.0.0.1', offset = 0, endpoints, perEndpoint, query, concurrency = 128 }) => {
    fleet ??= new Endpoints(port, host);
    await fleet.open(offset + endpoints, { port, host });
    const template = subscribe(query, 0);
    const plan = [];
    for (let r = 0; r < perEndpoint; r++) for (const lane of fleet.lanes.slice(offset, offset + endpoints)) plan.push({ lane, template, observe: true });
    const result = await fleet.run(plan, { concurrency });
    return { ...result, relations: fleet.relations.size, unverified: fleet.unverified };
  },

  /** Deregisters every relation of the fleet (GET + Observe: 1 on its token); the endpoints stay open. */
  deregister: async ({ query, concurrency = 128 }) => ({ ...(await fleet.deregister(subscribe(query, 1), { concurrency })), relations: fleet.relations.size }),

  /** Prepares to time notifications: call before the broadcast, then `notifications`. */
  arm: ({ expected, timeoutMs }) => {
    armed = fleet.awaitNotifications(expected, timeoutMs).wait();
    return true;
  },
  notifications: () => armed,

  /** Full DTLS handshakes (cookie round, PSK), each closed with close_notify, `concurrency` at a time. */
  handshakeLoad: (args) => handshakeLoad(args),

  /** coaps: opens endpoints until there are offset + count, each with an established DTLS session left idle. */
  secureSessions: async ({ port, offset = 0, count, identity, psk }) => {
    secureFleet ??= new Endpoints(port, '127.0.0.1', { identity, psk });
    const started = Date.now();
    await secureFleet.open(offset + count);
    return { ms: Date.now() - started, endpoints: secureFleet.lanes.length, failed: secureFleet.handshakesFailed, cookieRounds: secureFleet.cookieRounds };
  },

  /** coaps: one CON request from each of the endpoints offset..offset+count-1, which then idle again. */
  secureRequests: async ({ offset = 0, count, path, concurrency = 128 }) => {
    const template = requestTemplate({ path });
    const result = await secureFleet.run(secureFleet.lanes.slice(offset, offset + count).map((lane) => ({ lane, template })), { concurrency });
    secureFleet.compact();
    return result;
  },

  closeFleet: () => {
    fleet?.close();
    fleet = null;
    secureFleet?.close();
    secureFleet = null;
    return true;
  },
});
