'use strict';
/**
 * The Debian packages the tests need, checked before `npm test` (and by .ci/run): libcoap's
 * clients and headers (real CoAP peers, the C firmware example), redis-server (the Kuzzle host),
 * python3-cbor2 (an independent CBOR decoder, and the raw-socket sender), the C build tools (the
 * native DTLS addon, built by node-gyp at `npm ci`, and the C firmware example), the openssl
 * command (test certificates), nginx with its stream module (the cluster tests' UDP load
 * balancer), and nftables with conntrack-tools (the cluster tests' DNAT balancer, dnat.js).
 * Run as root, it installs the missing ones with apt-get; otherwise it prints the exact
 * `apt-get install` line and fails, so that no test skips for want of a tool.
 */
const { spawnSync } = require('node:child_process');

const PACKAGES = ['libcoap3-bin', 'libcoap3-dev', 'redis-server', 'python3-cbor2', 'gcc', 'g++', 'make', 'python3', 'pkg-config', 'libc6-dev', 'openssl', 'nginx', 'libnginx-mod-stream', 'nftables', 'conntrack'];

const installed = (name) =>
  spawnSync('dpkg-query', ['-W', '-f=${Status}', name], { encoding: 'utf8' }).stdout?.includes('install ok installed') === true;

const missing = PACKAGES.filter((name) => !installed(name));
if (missing.length > 0) {
  const line = `apt-get install -y ${missing.join(' ')}`;
  if (process.getuid?.() !== 0) {
    console.error(`The tests need Debian packages that are missing. As root, run:\n  apt-get update && ${line}`);
    process.exit(1);
  }
  console.log(`Installing the Debian packages the tests need: ${missing.join(' ')}`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const run = (args) => spawnSync('apt-get', args, { stdio: 'inherit', env }).status === 0;
  if (!run(['update', '-qq']) || !run(['install', '-y', '-qq', ...missing])) {
    console.error(`apt-get failed; run it yourself: apt-get update && ${line}`);
    process.exit(1);
  }
}
