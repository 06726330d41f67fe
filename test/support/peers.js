'use strict';
/**
 * Real peers for the tests: libcoap's coap-client-notls, Debian's python3-cbor2 as an independent
 * CBOR decoder, and a raw UDP socket for byte-level exchanges. A missing tool fails the test with
 * the package to install; nothing is skipped.
 */
const { spawn, execFileSync } = require('node:child_process');
const dgram = require('node:dgram');

const COAP_CLIENT = 'coap-client-notls';
const SYSTEM_PYTHON = '/usr/bin/python3';

/** Runs coap-client-notls; resolves {code, stdout (Buffer), stderr}. Killed after timeoutMs. */
function coapClient(args, { timeoutMs = 15000, input } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(COAP_CLIENT, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    const out = [];
    let err = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.stdout.on('data', (chunk) => out.push(chunk));
    child.stderr.on('data', (chunk) => (err += chunk));
    child.on('error', (error) => {
      clearTimeout(timer);
      reject(error.code === 'ENOENT' ? new Error(`${COAP_CLIENT} is missing: apt-get install libcoap3-bin`) : error);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout: Buffer.concat(out), stderr: err });
    });
    child.stdin.end(input);
  });
}

/** Decodes CBOR with python3-cbor2 and returns it as JSON-compatible data plus Python type names. */
function decodeWithCbor2(buffer) {
  const script = [
    'import sys, json, cbor2',
    'v = cbor2.loads(sys.stdin.buffer.read())',
    'def types(x):',
    '    if isinstance(x, dict): return {k: types(w) for k, w in x.items()}',
    '    if isinstance(x, list): return [types(w) for w in x]',
    '    return type(x).__name__',
    'print(json.dumps({"value": v, "types": types(v)}))',
  ].join('\n');
  try {
    return JSON.parse(execFileSync(SYSTEM_PYTHON, ['-c', script], { input: buffer }).toString());
  } catch (error) {
    throw new Error(`python3-cbor2 could not decode (apt-get install python3-cbor2): ${error.message}`);
  }
}

/**
 * Sends datagrams from one UDP socket and collects what comes back.
 * `exchange(datagrams, {count, timeoutMs})` resolves with the answers received
 * (stops at `count` answers or at the timeout).
 */
async function udpPeer(port, address = '127.0.0.1') {
  const socket = dgram.createSocket(address.includes(':') ? 'udp6' : 'udp4');
  await new Promise((resolve) => socket.bind(0, resolve));
  const inbox = [];
  let waiter = null;
  socket.on('message', (message) => {
    inbox.push(message);
    if (waiter) waiter();
  });
  return {
    socket,
    send: (datagram) => new Promise((resolve) => socket.send(datagram, port, address, resolve)),
    /** Waits until `count` datagrams arrived in total since the last take(), or timeoutMs. */
    take(count, timeoutMs = 3000) {
      return new Promise((resolve) => {
        const done = () => {
          clearTimeout(timer);
          waiter = null;
          resolve(inbox.splice(0, inbox.length));
        };
        const timer = setTimeout(done, timeoutMs);
        waiter = () => inbox.length >= count && done();
        waiter();
      });
    },
    close: () => new Promise((resolve) => socket.close(resolve)),
  };
}

module.exports = { coapClient, decodeWithCbor2, udpPeer, COAP_CLIENT };
