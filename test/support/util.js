'use strict';
/** Waiting and temporary files, for the integration and end-to-end tests alike. */
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

module.exports = { sleep, waitUntil, tmpFile, removeTmp };
