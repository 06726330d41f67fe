'use strict';
// Many client endpoints doing a few exchanges each (idle devices, observe
// registrations, receiving notifications): one UDP socket per endpoint, a
// global window of requests in flight, RFC 7252 retransmission. Tokens are 4
// bytes from one counter, so a token names one request or one relation.
// With `secure` ({identity, psk}) the endpoints are coaps ones: each opens
// with a DTLS handshake instead (lib/dtlsClient.js; DTLS verified the address).
// Each endpoint talks to one server, given when it is opened (the fleet's by
// default): one fleet can spread its endpoints over the nodes of a cluster.
const dgram = require('node:dgram');
const { performance } = require('node:perf_hooks');
const { TYPE, OPTION, requestTemplate, emptyAck, codeText, findOption, verifyEndpoint } = require('./coapWire');
const { SecureEndpoint } = require('./dtlsClient');

const clock = () => performance.timeOrigin + performance.now();
// A server outside loopback (a cluster node's address) is unreachable from a socket bound to 127.0.0.1.
const bindAddressFor = (host) => (host.startsWith('127.') ? '127.0.0.1' : '0.0.0.0');

class Endpoints {
  constructor(port, host = '127.0.0.1', secure = null) {
    this.port = port;
    this.host = host;
    this.secure = secure === null ? null : { port, host, identity: secure.identity, psk: Buffer.from(secure.psk) };
    /** coaps endpoints whose handshake failed; their HelloVerifyRequests. */
    this.handshakesFailed = 0;
    this.cookieRounds = 0;
    this.lanes = [];
    this.jobs = new Map(); // token -> pending exchange
    this.relations = new Map(); // token -> { notifications, first, last }
    this.nextToken = 1;
    /** Endpoints that could not show they receive at their address (then their large answers are withheld). */
    this.unverified = 0;
    this.notified = { count: 0, cons: 0, first: 0, last: 0, strays: 0 };
    this.onNotification = null;
  }

  /**
   * Opens endpoints until there are `count`, each verified as a device is once (verifyEndpoint),
   * or, coaps, once its handshake is through; all stay open (a closed port could come back as
   * another endpoint). The new ones talk to `to` (coaps ones to the fleet's server).
   */
  async open(count, to = { port: this.port, host: this.host }) {
    const opening = [];
    while (this.lanes.length < count) {
      const socket = this.secure === null ? dgram.createSocket('udp4') : new SecureEndpoint(this.secure);
      const lane = { index: this.lanes.length, socket, mid: Math.floor(Math.random() * 0x10000), port: to.port, host: to.host };
      lane.socket.on('message', (message) => this.receive(lane, message));
      lane.socket.on('error', () => {});
      this.lanes.push(lane);
      opening.push(this.secure === null ? this.verify(lane) : this.shakeHands(lane));
      if (opening.length >= 500) await Promise.all(opening.splice(0));
    }
    await Promise.all(opening);
  }

  async verify(lane) {
    await new Promise((resolve) => lane.socket.bind(0, bindAddressFor(lane.host), resolve));
    const verified = await verifyEndpoint(lane.socket, lane.port, lane.host, () => {
      const mid = lane.mid;
      lane.mid = (mid + 1) & 0xffff;
      return mid;
    });
    if (!verified) this.unverified++;
  }

  async shakeHands(lane) {
    await lane.socket.bind();
    try {
      await lane.socket.handshake();
    } catch {
      this.handshakesFailed++;
      return;
    }
    this.cookieRounds += lane.socket.cookieRounds;
    lane.socket.compact(); // 10,000 client sessions at their idle size in this process
  }

  /** coaps: releases the record buffers of every client session (idle again). */
  compact() {
    for (const lane of this.lanes) lane.socket.compact?.();
  }

  close() {
    for (const lane of this.lanes) lane.socket.close();
    this.lanes = [];
  }

  receive(lane, message) {
    if (message.length < 4) return;
    const type = (message[0] >> 4) & 3;
    const code = message[1];
    const mid = (message[2] << 8) | message[3];
    if (type === TYPE.CON) lane.socket.send(emptyAck(mid), lane.port, lane.host);
    if (code === 0) {
      if (type !== TYPE.ACK) return;
      for (const job of this.jobs.values()) if (job.lane === lane && job.mid === mid) job.acked = true; // separate response follows
      return;
    }
    if ((message[0] & 0x0f) !== 4) return;
    const token = message.readUInt32BE(4);
    const job = this.jobs.get(token);
    if (job !== undefined) {
      this.jobs.delete(token);
      job.finish(code, findOption(message, OPTION.OBSERVE) !== undefined);
      return;
    }
    const relation = this.relations.get(token);
    if (relation === undefined) return void this.notified.strays++;
    const now = clock();
    relation.notifications++;
    relation.last = now;
    if (relation.notifications === 1) relation.first = now;
    this.notified.count++;
    if (type === TYPE.CON) this.notified.cons++; // pacing and liveness send some CON (RFC 7641 §4.5)
    this.notified.last = now;
    if (this.notified.first === 0) this.notified.first = now;
    this.onNotification?.();
  }

  /**
   * Runs one request per item of `plan` ([{lane, template, observe, token?}]) with at most
   * `concurrency` in flight; a new token unless the item names one. Resolves {codes, ok, failed,
   * registered, ms}.
   */
  run(plan, { concurrency = 256, ackTimeoutMs = 1000, maxRetransmit = 4 } = {}) {
    const started = clock();
    const result = { codes: {}, ok: 0, failed: 0, registered: 0, retransmissions: 0 };
    let next = 0;
    let inFlight = 0;
    return new Promise((resolve) => {
      const timer = setInterval(() => {
        const now = performance.now();
        for (const job of this.jobs.values()) {
          if (job.acked || job.deadline > now) continue;
          if (job.tries >= maxRetransmit) {
            this.jobs.delete(job.token);
            job.finish(null, false);
            continue;
          }
          job.tries++;
          result.retransmissions++;
          job.timeout *= 2;
          job.deadline = now + job.timeout;
          job.lane.socket.send(job.buf, job.lane.port, job.lane.host);
        }
      }, 20);
      const launch = () => {
        while (inFlight < concurrency && next < plan.length) {
          const { lane, template, observe, token: named } = plan[next++];
          const token = named ?? (this.nextToken++ >>> 0);
          const mid = lane.mid;
          lane.mid = (lane.mid + 1) & 0xffff;
          const timeout = ackTimeoutMs * (1 + Math.random() * 0.5);
          const job = {
            lane, token, mid, buf: template(mid, token), tries: 0, timeout, deadline: performance.now() + timeout, acked: false,
            finish: (code, hasObserve) => {
              inFlight--;
              if (code === null) result.failed++;
              else {
                result.ok++;
                result.codes[codeText(code)] = (result.codes[codeText(code)] ?? 0) + 1;
                if (observe && hasObserve) {
                  result.registered++;
                  this.relations.set(token, { lane, notifications: 0, first: 0, last: 0 });
                }
              }
              if (next < plan.length) launch();
              else if (inFlight === 0) {
                clearInterval(timer);
                resolve({ ...result, ms: Math.round(clock() - started) });
              }
            },
          };
          this.jobs.set(token, job);
          inFlight++;
          lane.socket.send(job.buf, lane.port, lane.host);
        }
        if (plan.length === 0) {
          clearInterval(timer);
          resolve({ ...result, ms: 0 });
        }
      };
      launch();
    });
  }

  /**
   * Ends every relation from the device's side: `template` (GET + Observe: 1, RFC 7641 §3.6) on
   * its token. Resolves as run().
   */
  deregister(template, options) {
    const plan = [...this.relations].map(([token, relation]) => ({ lane: relation.lane, template, token }));
    this.relations.clear();
    return this.run(plan, options);
  }

  /** Resets notification counters; resolves when every relation got one (or timeout). */
  awaitNotifications(expected, timeoutMs) {
    this.notified = { count: 0, cons: 0, first: 0, last: 0, strays: 0 };
    for (const relation of this.relations.values()) relation.notifications = 0;
    let notifiedRelations = 0;
    return {
      wait: () => new Promise((resolve) => {
        const finish = () => {
          clearTimeout(timer);
          this.onNotification = null;
          let distinct = 0;
          const lastByServer = {}; // host -> its last notification (endpoints spread over a cluster's nodes)
          for (const relation of this.relations.values()) {
            if (relation.notifications === 0) continue;
            distinct++;
            lastByServer[relation.lane.host] = Math.max(lastByServer[relation.lane.host] ?? 0, relation.last);
          }
          resolve({ ...this.notified, relations: distinct, lastByServer });
        };
        const timer = setTimeout(finish, timeoutMs);
        this.onNotification = () => { if (++notifiedRelations >= expected) finish(); };
      }),
    };
  }
}

module.exports = { Endpoints, requestTemplate, clock };
