'use strict';
// The native DTLS 1.2 server engine (native/dtls.c) against real peers: node-dtls-client and the
// libcoap clients (OpenSSL and GnuTLS builds) over loopback UDP, plus in-process checks of the
// stateless cookie listener, argument checking and session lifetime.
const test = require('node:test');
const assert = require('node:assert/strict');
const dgram = require('node:dgram');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawn } = require('node:child_process');
const dtls = require('../../build/Release/kuzzle_coap_dtls.node');
const { createTestPki } = require('../support/certificates');

const MTU = 1152;
const PSK_CIPHERS = 'PSK-AES128-CCM8:PSK-AES128-GCM-SHA256';
const IDENTITY = 'device-1';
const KEY = Buffer.from('0123456789abcdef');

// ---------------------------------------------------------------------------------------------
// A tiny coaps server over the addon, as the listener will use it.

// An epoch-0 ClientHello: content type 22 (byte 0), epoch 0 (bytes 3..4), handshake type 1
// (byte 13). message_seq (bytes 17..18) is 0 for a new handshake, 1 for the echo of a cookie.
function isClientHello(d) {
  return d.length >= 25 && d[0] === 22 && d[3] === 0 && d[4] === 0 && d[13] === 1;
}

// CoAP 2.05 "ok" for a request: same message ID and token; ACK for a CON, NON otherwise.
function coapOk(request) {
  const tkl = request[0] & 0x0f;
  const type = (request[0] >> 4) & 3;
  const head = Buffer.from([type === 0 ? 0x60 | tkl : 0x50 | tkl, 0x45, request[2], request[3]]);
  return Buffer.concat([head, request.subarray(4, 4 + tkl), Buffer.from([0xff]), Buffer.from('ok')]);
}

// Whole records only, and at most `mtu` bytes: what every datagram from the addon must be.
function datagramProblem(d, mtu) {
  if (d.length > mtu) return `${d.length} bytes > mtu ${mtu}`;
  let i = 0;
  while (i + 13 <= d.length) i += 13 + d.readUInt16BE(i + 11);
  return i === d.length ? null : `records do not end at the datagram end (${i} vs ${d.length})`;
}

async function startServer(t, contextOptions, { keys = new Map([[IDENTITY, KEY]]), respond = (d) => d } = {}) {
  const mtu = contextOptions.mtu ?? MTU;
  const ctx = dtls.createContext({ mtu, ...contextOptions });
  const listener = dtls.createListener(ctx);
  const socket = dgram.createSocket('udp4');
  const sessions = new Map(); // "address:port" -> { session, state }
  const log = { established: [], failed: [], closed: [], data: [], lastFromPeer: new Map(), lookups: [], sent: [], bad: [], retransmitted: 0 };
  const lookup = (identity) => {
    log.lookups.push(identity.toString());
    return keys.get(identity.toString()) ?? null;
  };
  const send = (datagrams, rinfo) => {
    for (const d of datagrams) {
      const problem = datagramProblem(d, mtu);
      if (problem) log.bad.push(problem);
      log.sent.push(d);
      socket.send(d, rinfo.port, rinfo.address);
    }
  };
  const settle = (key, entry, state, error) => {
    if (state === 1 && entry.state !== 1) log.established.push({ key, info: dtls.info(entry.session) });
    entry.state = state;
    if (state === 3) log.failed.push({ key, error });
    if (state === 2) log.closed.push(key);
    if (state >= 2) {
      dtls.free(entry.session);
      sessions.delete(key);
    }
  };
  socket.on('message', (msg, rinfo) => {
    const key = `${rinfo.address}:${rinfo.port}`;
    let entry = sessions.get(key);
    log.lastFromPeer.set(key, msg);
    // A new handshake from a peer whose session is established (client restarted on the same
    // port): the session would drop both ClientHellos silently, so the listener answers them. A
    // session still handshaking keeps its ClientHellos (retransmissions of the cookie echo).
    if (entry && entry.state !== 0 && isClientHello(msg)) entry = undefined;
    if (!entry) {
      const r = dtls.listen(listener, key, msg, lookup);
      send(r.datagrams, rinfo);
      if (r.error) log.failed.push({ key, error: r.error });
      if (r.session) {
        const old = sessions.get(key);
        if (old) dtls.free(old.session);
        sessions.set(key, { session: r.session, state: 0 });
      }
      return;
    }
    const r = dtls.feed(entry.session, msg, lookup);
    send(r.datagrams, rinfo);
    for (const d of r.data) {
      log.data.push({ key, data: d });
      const reply = respond(d);
      if (reply) send(dtls.write(entry.session, reply), rinfo);
    }
    settle(key, entry, r.state, r.error);
  });
  const timer = setInterval(() => {
    for (const [key, entry] of sessions) {
      if (dtls.timeout(entry.session) === 0) {
        const [address, port] = [key.slice(0, key.lastIndexOf(':')), Number(key.slice(key.lastIndexOf(':') + 1))];
        const again = dtls.handleTimeout(entry.session);
        log.retransmitted += again.length;
        send(again, { address, port });
        const { state } = dtls.info(entry.session);
        if (state === 3) settle(key, entry, 3, 'timeout');
      }
    }
  }, 20);
  await new Promise((resolve) => socket.bind(0, '127.0.0.1', resolve));
  const server = { ctx, listener, socket, sessions, log, port: socket.address().port };
  server.close = () => {
    clearInterval(timer);
    for (const { session } of sessions.values()) dtls.free(session);
    sessions.clear();
    try {
      socket.close();
    } catch {}
  };
  t.after(server.close);
  return server;
}

// ---------------------------------------------------------------------------------------------
// Peers.

function dtlsClient(t, port, { identity = IDENTITY, key = KEY, cipher, listenPort, message = 'hello' } = {}) {
  const { dtls: client } = require('node-dtls-client');
  return new Promise((resolve, reject) => {
    const socket = client.createSocket({
      type: 'udp4',
      address: '127.0.0.1',
      port,
      psk: { [identity]: key },
      timeout: 2000,
      ciphers: [cipher],
      ...(listenPort ? { listenPort } : {}),
    });
    let closed = false;
    socket.on('close', () => (closed = true));
    const peer = {
      socket,
      reply: null,
      close() {
        if (closed) return;
        closed = true;
        try {
          socket.close();
        } catch {}
      },
      // Vanish without close_notify, as a rebooting device does.
      vanish() {
        closed = true;
        socket.udp.close();
      },
    };
    const done = (fn, v) => {
      clearTimeout(guard);
      fn(v);
    };
    const guard = setTimeout(() => done(reject, new Error('no answer within 5 s')), 5000);
    socket.on('connected', () => socket.send(Buffer.from(message)));
    socket.on('message', (msg) => done(resolve, Object.assign(peer, { reply: msg })));
    socket.on('error', (err) => {
      closed = true; // node-dtls-client has closed its socket on error
      done(reject, err);
    });
    t.after(() => {
      clearTimeout(guard);
      peer.close();
    });
  });
}

// Runs a client to its end (15 s at most); killed by the test's end whatever happens.
function run(t, command, args) {
  return new Promise((resolve) => {
    const child = spawn(command, args, { timeout: 15000, stdio: ['ignore', 'pipe', 'pipe'] });
    t.after(() => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('close', (code, signal) => {
      resolve({ code, signal, stdout, stderr });
    });
    child.on('error', (err) => resolve({ code: -1, signal: null, stdout, stderr: String(err) }));
  });
}

async function waitFor(predicate, ms = 3000) {
  const end = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > end) return false;
    await new Promise((r) => setTimeout(r, 10));
  }
  return true;
}

// Captures the cookieless ClientHello of node-dtls-client.
async function captureClientHello(t) {
  const raw = dgram.createSocket('udp4');
  t.after(() => {
    try {
      raw.close();
    } catch {}
  });
  await new Promise((resolve) => raw.bind(0, '127.0.0.1', resolve));
  const got = new Promise((resolve) => raw.once('message', resolve));
  const { dtls: client } = require('node-dtls-client');
  const socket = client.createSocket({
    type: 'udp4',
    address: '127.0.0.1',
    port: raw.address().port,
    psk: { [IDENTITY]: KEY },
    timeout: 2000,
    ciphers: ['TLS_PSK_WITH_AES_128_CCM_8'],
  });
  socket.on('error', () => {});
  const hello = await got;
  try {
    socket.close();
  } catch {}
  return hello;
}

// The same ClientHello with a cookie (and message_seq 1), as a client sends it after a
// HelloVerifyRequest.
function withCookie(hello, cookie) {
  const body = hello.subarray(25);
  const cookieAt = 35 + body[34]; // client_version 2 + random 32 + session_id length + id
  const newBody = Buffer.concat([
    body.subarray(0, cookieAt),
    Buffer.from([cookie.length]),
    cookie,
    body.subarray(cookieAt + 1 + body[cookieAt]),
  ]);
  const record = Buffer.alloc(25);
  hello.copy(record, 0, 0, 11); // type, version, epoch, sequence
  record.writeUIntBE(hello.readUIntBE(5, 6) + 1, 5, 6);
  record.writeUInt16BE(12 + newBody.length, 11);
  record[13] = 1;
  record.writeUIntBE(newBody.length, 14, 3);
  record.writeUInt16BE(1, 17); // message_seq
  record.writeUIntBE(0, 19, 3); // fragment_offset
  record.writeUIntBE(newBody.length, 22, 3); // fragment_length
  return Buffer.concat([record, newBody]);
}

// HelloVerifyRequest: record header 13, handshake header 12, server_version 2, cookie length 1.
const cookieOf = (hvr) => hvr.subarray(28, 28 + hvr[27]);
const isHelloVerifyRequest = (d) => d[0] === 22 && d[13] === 3;

// Every record type / handshake type in a datagram.
function records(d) {
  const out = [];
  for (let i = 0; i + 13 <= d.length; i += 13 + d.readUInt16BE(i + 11)) {
    out.push({ type: d[i], epoch: d.readUInt16BE(i + 3), hs: d[i] === 22 && d.readUInt16BE(i + 3) === 0 ? d[i + 13] : null });
  }
  return out;
}

// ---------------------------------------------------------------------------------------------

test('the addon runs on Node’s own OpenSSL 3', () => {
  // The version node:crypto reports: the symbols resolved from the node binary, not a libssl.
  assert.ok(dtls.opensslVersion().startsWith(`OpenSSL ${process.versions.openssl.split('+')[0]} `), dtls.opensslVersion());
});

test('createContext checks its options and reports OpenSSL’s reason', () => {
  assert.throws(() => dtls.createContext(), TypeError);
  assert.throws(() => dtls.createContext({ psk: true, mtu: MTU }), TypeError);
  assert.throws(() => dtls.createContext({ ciphers: PSK_CIPHERS, psk: 'yes', mtu: MTU }), TypeError);
  assert.throws(() => dtls.createContext({ ciphers: PSK_CIPHERS, psk: true, mtu: 100 }), RangeError);
  assert.throws(() => dtls.createContext({ ciphers: PSK_CIPHERS, psk: true, mtu: '1152' }), TypeError);
  assert.throws(() => dtls.createContext({ ciphers: 'NO-SUCH-CIPHER', psk: true, mtu: MTU }), /no cipher match/);
  // PSK suites without psk, ECDSA suites without a certificate: nothing could ever be negotiated.
  assert.throws(() => dtls.createContext({ ciphers: PSK_CIPHERS, psk: false, mtu: MTU }), /none of the ciphers/);
  assert.throws(() => dtls.createContext({ ciphers: 'ECDHE-ECDSA-AES128-CCM8', psk: true, mtu: MTU }), /none of the ciphers/);
  assert.throws(
    () => dtls.createContext({ ciphers: PSK_CIPHERS, psk: true, mtu: MTU, certificate: Buffer.from('junk'), privateKey: Buffer.from('junk') }),
    /options.certificate: no start line/,
  );
  assert.throws(() => dtls.createContext({ ciphers: PSK_CIPHERS, psk: true, mtu: MTU, verifyClient: 'always' }), TypeError);
  assert.throws(() => dtls.createContext({ ciphers: PSK_CIPHERS, psk: true, mtu: MTU, verifyClient: 'require' }), /needs options.ca/);
  const ctx = dtls.createContext({ ciphers: PSK_CIPHERS, psk: true, mtu: MTU });
  assert.throws(() => dtls.setCookieSecrets(ctx, Buffer.alloc(4), null), RangeError);
  assert.throws(() => dtls.setCookieSecrets({}, Buffer.alloc(32), null), TypeError);
  dtls.setCookieSecrets(ctx, Buffer.alloc(32, 1), Buffer.alloc(32, 2));
  dtls.setCookieSecrets(ctx, Buffer.alloc(32, 3), undefined);
});

test('wrong argument types throw TypeError, never crash', () => {
  const ctx = dtls.createContext({ ciphers: PSK_CIPHERS, psk: true, mtu: MTU });
  const listener = dtls.createListener(ctx);
  assert.throws(() => dtls.createListener({}), TypeError);
  assert.throws(() => dtls.createListener(listener), TypeError);
  assert.throws(() => dtls.listen(ctx, 'a:1', Buffer.alloc(20), null), TypeError);
  assert.throws(() => dtls.listen(listener, 5, Buffer.alloc(20), null), TypeError);
  assert.throws(() => dtls.listen(listener, '', Buffer.alloc(20), null), RangeError);
  assert.throws(() => dtls.listen(listener, 'x'.repeat(300), Buffer.alloc(20), null), RangeError);
  assert.throws(() => dtls.listen(listener, 'a:1', 'text', null), TypeError);
  assert.throws(() => dtls.listen(listener, 'a:1', Buffer.alloc(20), 42), TypeError);
  for (const fn of ['feed', 'write', 'timeout', 'handleTimeout', 'shutdown', 'info', 'free']) {
    assert.throws(() => dtls[fn](listener, Buffer.alloc(20), null), TypeError, fn);
    assert.throws(() => dtls[fn](undefined), TypeError, fn);
    assert.throws(() => dtls[fn]({ fake: true }), TypeError, fn);
  }
});

test('2,000 cookieless ClientHellos: only HelloVerifyRequests, no session; a cookie only works for its peer', async (t) => {
  const hello = await captureClientHello(t);
  // What the JS side routes on: content type 22, epoch 0, handshake type 1, message_seq 0.
  assert.ok(isClientHello(hello));
  assert.equal(hello.readUInt16BE(17), 0, 'message_seq 0');
  assert.equal(hello[0], 22);
  assert.equal(hello.readUInt16BE(3), 0);
  assert.equal(hello[13], 1);

  const ctx = dtls.createContext({ ciphers: PSK_CIPHERS, psk: true, mtu: MTU });
  const listener = dtls.createListener(ctx);
  const lookup = () => KEY;
  for (let i = 0; i < 2000; i++) {
    const r = dtls.listen(listener, `10.0.${i >> 8}.${i & 255}:${1024 + i}`, hello, lookup);
    assert.equal(r.session, null);
    assert.equal(r.datagrams.length, 1);
    assert.ok(isHelloVerifyRequest(r.datagrams[0]), `answer ${i} is a HelloVerifyRequest`);
    assert.equal(cookieOf(r.datagrams[0]).length, 32);
  }
  // Garbage and truncated records: no answer, no session.
  for (let i = 0; i < 200; i++) {
    const junk = i % 2 ? require('node:crypto').randomBytes(1 + i) : hello.subarray(0, i % hello.length);
    const r = dtls.listen(listener, `10.1.0.${i}:5684`, junk, lookup);
    assert.equal(r.session, null);
    assert.deepEqual(r.datagrams, []);
  }

  const peerA = '192.0.2.1:40000';
  const cookieA = cookieOf(dtls.listen(listener, peerA, hello, lookup).datagrams[0]);
  // Another peer with A's cookie gets a new HelloVerifyRequest, not a session.
  const stolen = dtls.listen(listener, '192.0.2.2:40000', withCookie(hello, cookieA), lookup);
  assert.equal(stolen.session, null);
  assert.ok(isHelloVerifyRequest(stolen.datagrams[0]));
  // After one rotation the previous secret still verifies (the cookie is checked twice) ...
  dtls.setCookieSecrets(ctx, Buffer.alloc(32, 7), null);
  const cookieA2 = cookieOf(dtls.listen(listener, peerA, hello, lookup).datagrams[0]);
  assert.notDeepEqual(cookieA2, cookieA);
  dtls.setCookieSecrets(ctx, Buffer.alloc(32, 8), Buffer.alloc(32, 7));
  const ok = dtls.listen(listener, peerA, withCookie(hello, cookieA2), lookup);
  assert.notEqual(ok.session, null);
  assert.equal(ok.datagrams.length, 1, 'ServerHello and ServerHelloDone packed into one datagram');
  assert.deepEqual(records(ok.datagrams[0]).map((r) => r.hs), [2, 14]);
  const ms = dtls.timeout(ok.session);
  assert.ok(ms > 0 && ms <= 1000, `retransmission timer ${ms} ms`);
  assert.deepEqual(dtls.handleTimeout(ok.session), [], 'not due yet');
  assert.equal(dtls.info(ok.session).state, 0);
  assert.throws(() => dtls.write(ok.session, Buffer.from('x')), /not established/);
  assert.deepEqual(dtls.shutdown(ok.session), [], 'nothing to close before the handshake completes');
  // ... and after two it does not.
  dtls.setCookieSecrets(ctx, Buffer.alloc(32, 9), Buffer.alloc(32, 8));
  const old = dtls.listen(listener, peerA, withCookie(hello, cookieA2), lookup);
  assert.equal(old.session, null);
  assert.ok(isHelloVerifyRequest(old.datagrams[0]));

  // A freed session throws, and freeing again is harmless.
  dtls.free(ok.session);
  dtls.free(ok.session);
  for (const fn of ['timeout', 'handleTimeout', 'shutdown', 'info']) assert.throws(() => dtls[fn](ok.session), /session is freed/);
  assert.throws(() => dtls.feed(ok.session, hello, lookup), /session is freed/);
  assert.throws(() => dtls.write(ok.session, Buffer.from('x')), /session is freed/);
});

test('a pskLookup calling back into its own session gets an Error, a throwing one is an unknown identity', async (t) => {
  const server = await startServer(t, { ciphers: PSK_CIPHERS, psk: true });
  const seen = [];
  // Replace the lookup: re-enter the addon on the session being fed, then throw.
  server.socket.removeAllListeners('message');
  const sessions = new Map();
  server.socket.on('message', (msg, rinfo) => {
    const key = `${rinfo.address}:${rinfo.port}`;
    const send = (ds) => ds.forEach((d) => server.socket.send(d, rinfo.port, rinfo.address));
    const session = sessions.get(key);
    if (!session) {
      const r = dtls.listen(server.listener, key, msg, null);
      send(r.datagrams);
      if (r.session) sessions.set(key, r.session);
      return;
    }
    const r = dtls.feed(session, msg, () => {
      assert.throws(() => dtls.feed(session, msg, null), /busy/);
      assert.throws(() => dtls.free(session), /busy/);
      seen.push('called');
      throw new Error('lookup failed');
    });
    send(r.datagrams);
    if (r.state === 3) seen.push(r.error);
  });
  t.after(() => sessions.forEach((s) => dtls.free(s)));
  await assert.rejects(dtlsClient(t, server.port, { cipher: 'TLS_PSK_WITH_AES_128_CCM_8' }));
  assert.ok(await waitFor(() => seen.length >= 2));
  assert.deepEqual(seen, ['called', 'psk identity not found']);
});

for (const cipher of ['TLS_PSK_WITH_AES_128_CCM_8', 'TLS_PSK_WITH_AES_128_GCM_SHA256']) {
  test(`node-dtls-client: PSK handshake and echo with ${cipher}`, async (t) => {
    const server = await startServer(t, { ciphers: PSK_CIPHERS, psk: true });
    const client = await dtlsClient(t, server.port, { cipher, message: 'hello over dtls' });
    const { reply } = client;
    assert.equal(reply.toString(), 'hello over dtls');
    assert.equal(server.log.established.length, 1);
    const { key, info } = server.log.established[0];
    assert.deepEqual(info.identity, Buffer.from(IDENTITY));
    assert.equal(info.cipher, cipher.endsWith('CCM_8') ? 'PSK-AES128-CCM8' : 'PSK-AES128-GCM-SHA256');
    assert.equal(info.subject, null);
    assert.equal(info.dataMtu, cipher.endsWith('CCM_8') ? MTU - 29 : MTU - 37);
    assert.deepEqual(server.log.lookups, [IDENTITY]);
    assert.deepEqual(server.log.bad, []);

    const { session } = server.sessions.get(key);
    assert.equal(dtls.timeout(session), -1, 'no timer once established');
    // Forged datagrams are dropped silently, never end the session: a tampered copy of the client's
    // last record, a replay, junk, encrypted records too short for the AEAD nonce + tag (OpenSSL
    // 3.0 alone would answer those with a fatal internal_error), a truncated record, and 2,000
    // random mutations.
    const crypto = require('node:crypto');
    const last = server.log.lastFromPeer.get(key);
    const forged = Buffer.from(last);
    forged[forged.length - 1] ^= 1;
    const shortRecord = (type, length) => {
      const r = Buffer.concat([Buffer.from(last.subarray(0, 13)), crypto.randomBytes(length)]);
      r[0] = type;
      r.writeUIntBE(last.readUIntBE(5, 6) + 1, 5, 6);
      r.writeUInt16BE(length, 11);
      return r;
    };
    const forgeries = [forged, last, crypto.randomBytes(100), last.subarray(0, last.length - 1)];
    for (const type of [20, 21, 22, 23]) for (const length of [1, 8, 15, 16, 23]) forgeries.push(shortRecord(type, length));
    forgeries.push(Buffer.concat([shortRecord(23, 5), forged]));
    for (let i = 0; i < 2000; i++) {
      const m = Buffer.from(last);
      m[crypto.randomInt(m.length)] ^= 1 + crypto.randomInt(255);
      forgeries.push(crypto.randomInt(4) ? m : m.subarray(0, crypto.randomInt(m.length)));
    }
    for (const d of forgeries) {
      const r = dtls.feed(session, d, null);
      assert.deepEqual([r.state, r.data, r.datagrams, r.error], [1, [], [], null], d.toString('hex'));
    }
    const again = await new Promise((resolve) => {
      client.socket.once('message', resolve);
      client.socket.send(Buffer.from('still there'));
    });
    assert.equal(again.toString(), 'still there');
    // Records are limited to the data MTU: no oversized datagram.
    const dataMtu = dtls.info(session).dataMtu;
    assert.equal(dtls.write(session, Buffer.alloc(dataMtu, 1))[0].length, MTU);
    assert.throws(() => dtls.write(session, Buffer.alloc(dataMtu + 1)), RangeError);
    // close_notify: an alert record (content type 21), then nothing more.
    const closing = dtls.shutdown(session);
    assert.equal(closing.length, 1);
    assert.deepEqual(records(closing[0]).map((r) => [r.type, r.epoch]), [[21, 1]]);
    assert.deepEqual(dtls.shutdown(session), []);
    assert.throws(() => dtls.write(session, Buffer.from('late')), /not established/);
    assert.equal(dtls.feed(session, last, null).state, 2);
    client.close();
  });
}

test('node-dtls-client: an unknown identity fails with an alert and keeps no session', async (t) => {
  const server = await startServer(t, { ciphers: PSK_CIPHERS, psk: true });
  await assert.rejects(dtlsClient(t, server.port, { identity: 'stranger', cipher: 'TLS_PSK_WITH_AES_128_CCM_8' }));
  assert.ok(await waitFor(() => server.log.failed.length === 1));
  assert.equal(server.log.failed[0].error, 'psk identity not found');
  assert.deepEqual(server.log.lookups, ['stranger']);
  assert.equal(server.sessions.size, 0);
  assert.equal(server.log.established.length, 0);
});

test('node-dtls-client: a wrong key never establishes a session', async (t) => {
  const server = await startServer(t, { ciphers: PSK_CIPHERS, psk: true });
  await assert.rejects(dtlsClient(t, server.port, { key: Buffer.from('fedcba9876543210'), cipher: 'TLS_PSK_WITH_AES_128_CCM_8' }));
  assert.deepEqual(server.log.lookups, [IDENTITY]);
  assert.equal(server.log.established.length, 0);
  assert.ok(server.log.retransmitted > 0, 'the server flight was retransmitted on its timer');
  // The client's Finished is discarded silently: the session is left half-open (state 0), to the
  // server's own deadline.
  for (const { session, state } of server.sessions.values()) {
    assert.equal(state, 0);
    assert.equal(dtls.info(session).state, 0);
  }
});

test('a client restarting on the same port gets a new session through the listener', async (t) => {
  const server = await startServer(t, { ciphers: PSK_CIPHERS, psk: true });
  const probe = dgram.createSocket('udp4');
  await new Promise((resolve) => probe.bind(0, '127.0.0.1', resolve));
  const listenPort = probe.address().port;
  await new Promise((resolve) => probe.close(resolve));
  const first = await dtlsClient(t, server.port, { cipher: 'TLS_PSK_WITH_AES_128_CCM_8', listenPort, message: 'one' });
  assert.equal(first.reply.toString(), 'one');
  first.vanish();
  const second = await dtlsClient(t, server.port, { cipher: 'TLS_PSK_WITH_AES_128_GCM_SHA256', listenPort, message: 'two' });
  assert.equal(second.reply.toString(), 'two');
  assert.equal(server.log.established.length, 2);
  assert.equal(server.log.established[0].key, server.log.established[1].key);
  assert.equal(server.sessions.size, 1);
  // The client's close_notify: state 2, answered with ours.
  const sent = server.log.sent.length;
  second.close();
  assert.ok(await waitFor(() => server.log.closed.length === 1));
  assert.equal(server.sessions.size, 0);
  assert.deepEqual(server.log.sent.slice(sent).flatMap(records).map((r) => r.type), [21]);
});

for (const client of ['coap-client-openssl', 'coap-client-gnutls']) {
  test(`${client}: PSK handshake and a CoAP exchange`, async (t) => {
    const server = await startServer(t, { ciphers: PSK_CIPHERS, psk: true }, { respond: coapOk });
    const r = await run(t, client, ['-B', '5', '-k', KEY.toString(), '-u', IDENTITY, `coaps://127.0.0.1:${server.port}/x`]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^ok\s*$/);
    assert.equal(server.log.established.length, 1);
    assert.equal(server.log.established[0].info.cipher, 'PSK-AES128-CCM8');
    assert.equal(server.log.data.length, 1);
    assert.deepEqual(server.log.bad, []);
  });

  test(`${client}: an unknown identity fails, state 3 with a reason`, async (t) => {
    const server = await startServer(t, { ciphers: PSK_CIPHERS, psk: true }, { respond: coapOk });
    const r = await run(t, client, ['-B', '3', '-k', KEY.toString(), '-u', 'nobody', `coaps://127.0.0.1:${server.port}/x`]);
    assert.doesNotMatch(r.stdout, /ok/);
    assert.ok(await waitFor(() => server.log.failed.length === 1));
    assert.equal(server.log.failed[0].error, 'psk identity not found');
    assert.equal(server.log.established.length, 0);
    assert.equal(server.sessions.size, 0);
  });
}

test('X.509: ECDHE-ECDSA-AES128-CCM8 with a required client certificate', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dtls-x509-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const pki = createTestPki(dir, { clients: ['device-42'] });
  const client = pki.clients['device-42'];

  const server = await startServer(
    t,
    {
      ciphers: 'ECDHE-ECDSA-AES128-CCM8',
      psk: false,
      certificate: fs.readFileSync(pki.server.cert),
      privateKey: fs.readFileSync(pki.server.key),
      ca: fs.readFileSync(pki.ca),
      verifyClient: 'require',
      mtu: 400, // the certificate flight must be fragmented and split into several datagrams
    },
    { respond: coapOk },
  );
  const url = `coaps://127.0.0.1:${server.port}/x`;
  const withCert = await run(t, 'coap-client-openssl', ['-B', '5', '-R', pki.ca, '-c', client.cert, '-j', client.key, url]);
  assert.equal(withCert.code, 0, withCert.stderr);
  assert.match(withCert.stdout, /^ok\s*$/);
  assert.equal(server.log.established.length, 1);
  const { info } = server.log.established[0];
  assert.equal(info.cipher, 'ECDHE-ECDSA-AES128-CCM8');
  assert.equal(info.identity, null);
  assert.match(info.subject, /CN=device-42/);
  assert.ok(info.dataMtu < 400);
  assert.deepEqual(server.log.bad, []);
  assert.ok(server.log.sent.length >= 4, `${server.log.sent.length} datagrams`);
  assert.ok(server.log.sent.some((d) => d.length > 300), 'records packed up to the MTU');

  const without = await run(t, 'coap-client-openssl', ['-B', '3', '-R', pki.ca, url]);
  assert.doesNotMatch(without.stdout, /ok/);
  assert.ok(await waitFor(() => server.log.failed.length === 1));
  assert.equal(server.log.failed[0].error, 'peer did not return a certificate');
  assert.equal(server.log.established.length, 1);

  // A certificate from another CA is refused too.
  const intruder = await run(t, 'coap-client-openssl', ['-B', '3', '-R', pki.ca, '-c', pki.intruder.cert, '-j', pki.intruder.key, url]);
  assert.doesNotMatch(intruder.stdout, /ok/);
  assert.ok(await waitFor(() => server.log.failed.length === 2));
  assert.match(server.log.failed[1].error, /certificate verify failed/);
  assert.equal(server.log.established.length, 1);
});

test('a ClientHello with no shared cipher is refused at once: an alert, no session', async (t) => {
  const server = await startServer(t, { ciphers: 'PSK-AES128-CCM8', psk: true });
  await assert.rejects(dtlsClient(t, server.port, { cipher: 'TLS_PSK_WITH_AES_128_CBC_SHA256' }), /handshake_failure/);
  assert.deepEqual(server.log.failed.map((f) => f.error), ['no shared cipher']);
  assert.equal(server.sessions.size, 0);
  assert.deepEqual(server.log.sent.slice(-1).flatMap(records).map((r) => r.type), [21]);
});

test('sessions, listeners and contexts dropped without free() are finalized safely', async (t) => {
  const v8 = require('node:v8');
  const vm = require('node:vm');
  v8.setFlagsFromString('--expose-gc');
  const gc = vm.runInNewContext('gc');
  const hello = await captureClientHello(t);
  const round = () => {
    const ctx = dtls.createContext({ ciphers: PSK_CIPHERS, psk: true, mtu: MTU });
    const listener = dtls.createListener(ctx);
    const sessions = [];
    for (let i = 0; i < 200; i++) {
      const peer = `198.51.100.${i}:5684`;
      const cookie = cookieOf(dtls.listen(listener, peer, hello, null).datagrams[0]);
      const { session } = dtls.listen(listener, peer, withCookie(hello, cookie), null);
      assert.notEqual(session, null);
      sessions.push(session);
    }
    dtls.free(sessions[0]);
    return sessions[1];
  };
  // A session outliving its context and listener still works: it holds the SSL_CTX.
  const survivor = round();
  for (let i = 0; i < 5; i++) round();
  for (let i = 0; i < 3; i++) {
    gc();
    await new Promise((resolve) => setImmediate(resolve));
  }
  assert.equal(dtls.info(survivor).state, 0);
  assert.ok(dtls.timeout(survivor) > 0);
  dtls.free(survivor);
});
