'use strict';
/** Waiting, free ports and temporary files, for the tests and their hosts alike. */
const dgram = require('node:dgram');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Polls `probe` (sync or async) every `every` ms until it returns a truthy value, which is
 * returned; after `ms`, returns its last (falsy) value.
 */
async function waitUntil(probe, ms = 3000, every = 10) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await probe();
    if (value || Date.now() >= deadline) return value;
    await sleep(every);
  }
}

let tmpDir = null;
let tmpCount = 0;
process.on('exit', () => removeTmp());

/** A file in a per-process temporary directory (`name`, or a fresh one), with `content` if given. */
function tmpFile(content, name = `f${++tmpCount}`) {
  tmpDir ??= fs.mkdtempSync(path.join(os.tmpdir(), 'coap-test-'));
  const file = path.join(tmpDir, name);
  if (content !== undefined) fs.writeFileSync(file, content);
  return file;
}

/** Removes the temporary directory (also done at exit); a later tmpFile() makes a new one. */
function removeTmp() {
  if (tmpDir !== null) fs.rmSync(tmpDir, { recursive: true, force: true });
  tmpDir = null;
}

/** A UDP port nobody uses on `host` now (for a client that must bind a fixed local port, or a server's config). */
function freeUdpPort(host = '127.0.0.1') {
  return new Promise((resolve, reject) => {
    const socket = dgram.createSocket('udp4');
    socket.on('error', reject);
    socket.bind(0, host, () => {
      const { port } = socket.address();
      socket.close(() => resolve(port));
    });
  });
}

module.exports = { sleep, waitUntil, freeUdpPort, tmpFile, removeTmp };
