'use strict';
// A coaps client endpoint for the load generator: one UDP socket (the plugin
// keys sessions by address:port) and one DTLS 1.2 PSK session at a time, from
// the bench's native client (dtls-client/). Shaped like the part of a dgram
// socket the CoAP clients use (send, on/off 'message', close), so that
// coapLoad and verifyEndpoint run over it unchanged; 'message' carries
// decrypted CoAP messages.
const dgram = require('node:dgram');
const { EventEmitter } = require('node:events');
const path = require('node:path');

const ADDON = path.join(__dirname, '..', 'dtls-client', 'build', 'Release', 'bench_dtls_client.node');
const STATE = { HANDSHAKING: 0, ESTABLISHED: 1, CLOSED: 2, FAILED: 3 };
// RFC 7252 §9.1.3.1's mandatory suite, as the devices of the issue use it.
const CIPHERS = 'PSK-AES128-CCM8';
const MTU = 1232; // the plugin's default coaps.mtu

let native = null;
let context = null;

/** The addon, or an Error that says how to build it. */
function client() {
  if (native !== null) return native;
  try {
    native = require(ADDON);
  } catch (error) {
    throw new Error(`the bench's DTLS client is not built (${error.message.split('\n')[0]}): \`npm run bench\` builds it first (node-gyp rebuild --directory test/bench/dtls-client)`);
  }
  context = native.createContext({ ciphers: CIPHERS, mtu: MTU });
  return native;
}

/** A HelloVerifyRequest: handshake record (22), epoch 0, message type 3. */
const isHelloVerify = (datagram) => datagram.length > 13 && datagram[0] === 22 && datagram[3] === 0 && datagram[4] === 0 && datagram[13] === 3;

class SecureEndpoint extends EventEmitter {
  /** @param {{port: number, host?: string, identity: string, psk: Buffer}} o */
  constructor({ port, host = '127.0.0.1', identity, psk }) {
    super();
    client();
    this.port = port;
    this.host = host;
    this.identity = identity;
    this.psk = psk;
    this.session = null;
    this.state = STATE.CLOSED;
    this.cookieRounds = 0;
    this.timer = null;
    this.waiter = null;
    this.socket = dgram.createSocket('udp4');
    this.socket.on('error', () => {});
    this.socket.on('message', (datagram) => this.receive(datagram));
  }

  bind() {
    return new Promise((resolve) => this.socket.bind(0, '127.0.0.1', resolve));
  }

  /** A full handshake (ClientHello, cookie round, PSK key exchange) on a new session; resolves once established. */
  handshake(timeoutMs = 10000) {
    this.free();
    const { session, datagrams } = native.connect(context, this.identity, this.psk);
    this.session = session;
    this.state = STATE.HANDSHAKING;
    return new Promise((resolve, reject) => {
      const deadline = setTimeout(() => this.settle(new Error('handshake timed out')), timeoutMs);
      this.waiter = { resolve, reject, deadline };
      this.output(datagrams);
    });
  }

  /** Encrypts one CoAP message (the address is the session's). */
  send(plaintext) {
    if (this.state !== STATE.ESTABLISHED) return;
    this.socket.send(native.write(this.session, plaintext), this.port, this.host);
  }

  /** Releases the record buffers of an idle session, as the plugin does for its own. */
  compact() {
    if (this.session !== null && this.state === STATE.ESTABLISHED) native.compact(this.session);
  }

  /** Ends the session with a close_notify (the socket stays for the next handshake). */
  end() {
    if (this.session !== null && this.state === STATE.ESTABLISHED) this.output(native.shutdown(this.session));
    this.free();
  }

  /** Forgets the session here only: the plugin keeps its side (an idle device). */
  free() {
    clearTimeout(this.timer);
    if (this.session !== null) native.free(this.session);
    this.session = null;
    this.state = STATE.CLOSED;
  }

  close(notify = true) {
    if (notify) this.end();
    else this.free();
    this.settle(new Error('closed'));
    try { this.socket.close(); } catch { /* already closed */ }
  }

  receive(datagram) {
    if (this.session === null || this.state >= STATE.CLOSED) return;
    if (this.state === STATE.HANDSHAKING && isHelloVerify(datagram)) this.cookieRounds++;
    const { datagrams, data, state } = native.feed(this.session, datagram);
    this.state = state;
    this.output(datagrams);
    for (const plaintext of data) this.emit('message', plaintext);
    if (state === STATE.ESTABLISHED) this.settle(null);
    else if (state >= STATE.CLOSED) this.settle(new Error(state === STATE.FAILED ? 'handshake failed' : 'closed by the server'));
  }

  output(datagrams) {
    for (const datagram of datagrams) this.socket.send(datagram, this.port, this.host);
    if (this.state === STATE.HANDSHAKING) this.arm();
  }

  /** OpenSSL's retransmission timer, while the handshake runs. */
  arm() {
    clearTimeout(this.timer);
    const ms = native.timeout(this.session);
    if (ms < 0) return;
    this.timer = setTimeout(() => {
      if (this.state !== STATE.HANDSHAKING) return;
      const datagrams = native.handleTimeout(this.session);
      this.output(datagrams);
    }, ms + 1);
  }

  settle(error) {
    const waiter = this.waiter;
    if (waiter === null) return;
    this.waiter = null;
    clearTimeout(waiter.deadline);
    clearTimeout(this.timer);
    if (error === null) waiter.resolve();
    else {
      this.free();
      waiter.reject(error);
    }
  }
}

module.exports = { SecureEndpoint, STATE };
