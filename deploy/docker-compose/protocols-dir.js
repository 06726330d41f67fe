'use strict';

/*
 * Prints the directory the Kuzzle installed at <root> (default /var/app, the official image's) loads
 * protocols from. Kuzzle 2 computes it in core/network/entryPoint.js as
 * path.join(__dirname, "../../../protocols/enabled"): <root>/protocols/enabled when Kuzzle runs
 * compiled in place, <root>/dist/protocols/enabled when it is compiled to dist/ (2.56's package). The
 * Dockerfile installs the plugin there. The path is read from Kuzzle's own code rather than guessed,
 * and the image build stops if it cannot be read.
 *
 *   node protocols-dir.js [kuzzle root]
 */

const fs = require('node:fs');
const path = require('node:path');

const LOAD_PATH = /path\.join\(\s*__dirname\s*,\s*["']([^"']*protocols\/enabled)["']\s*\)/;

/** The protocols/enabled directory of the Kuzzle package at `root`. Throws, saying why, if unknown. */
function protocolsDir(root) {
  const main = require.resolve(path.resolve(root));
  const entryPoint = path.join(path.dirname(main), 'lib', 'core', 'network', 'entryPoint.js');
  let source;
  try {
    source = fs.readFileSync(entryPoint, 'utf8');
  } catch (error) {
    throw new Error(`no Kuzzle entry point at ${entryPoint} (the package's main is ${main}): ${error.message}`);
  }
  const found = source.match(LOAD_PATH);
  if (!found) throw new Error(`${entryPoint} has no path.join(__dirname, "...protocols/enabled"): Kuzzle loads protocols some other way`);
  return path.resolve(path.dirname(entryPoint), found[1]);
}

if (require.main === module) {
  try {
    process.stdout.write(`${protocolsDir(process.argv[2] ?? '/var/app')}\n`);
  } catch (error) {
    process.stderr.write(`protocols-dir.js: ${error.message}\n`);
    process.exit(1);
  }
}

module.exports = { protocolsDir };
