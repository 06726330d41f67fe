'use strict';

// `npm run dev`: Kuzzle 2.56 with this CoAP plugin (built in dist/), for
// trying it by hand. CoAP on UDP 5683 on all interfaces (IPv4 + IPv6), Kuzzle
// HTTP/WebSocket on 7512, in-memory storage (unless ELASTICSEARCH_URL), a
// private Redis (unless REDIS_URL). These are defaults: .kuzzlerc and
// kuzzle_* variables (e.g. kuzzle_server__protocols__coap__port=5684) win.
// Kuzzle logs are shown unless KUZZLE_HOST_VERBOSE=0. Ctrl-C stops everything.
// coaps (DTLS) on UDP 5684 too, with a demo device credential: a user
// "demo-device", an API key of its own, and a credentials file in a temporary
// directory (removed at exit) that maps the PSK identity to that API key.
//
// `npm run dev -- --nodes 3` (root): a Kuzzle cluster of 3 nodes instead, one network namespace
// each (cluster/cluster.js), with nginx in front of them on 127.0.0.1 (cluster/balancer.js:
// Debian nginx + libnginx-mod-stream); prints the balancer's and each node's URLs. No coaps there.
// `npm run dev -- --nodes 3 --balancer nftables`: nftables DNAT in front instead (cluster/dnat.js:
// Debian nftables + conntrack), on a virtual address of the cluster's subnet; the nodes see the
// devices' own addresses.

const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { startKuzzleHost } = require('.');

const DEMO_DEVICE = { identity: 'demo-device', psk: 'demo-device-secret' };

async function start(options) {
  try {
    return await startKuzzleHost(options);
  } catch (error) {
    const rootOnDebian = process.getuid?.() === 0 && fs.existsSync('/etc/debian_version');
    if (error.code !== 'REDIS_SERVER_MISSING' || !rootOnDebian) throw error;
    console.log('redis-server is missing: installing it with apt-get (running as root on Debian)...');
    const install = () => spawnSync('apt-get', ['install', '-y', 'redis-server'], { stdio: 'inherit' }).status === 0;
    if (!install() && !(spawnSync('apt-get', ['update'], { stdio: 'inherit' }).status === 0 && install())) {
      throw new Error('apt-get install redis-server failed');
    }
    return startKuzzleHost(options);
  }
}

function coapAuthority(host, port, defaultPort = 5683) {
  const name = ['::', '0.0.0.0'].includes(host) ? 'localhost' : host.includes(':') ? `[${host}]` : host;
  return port === defaultPort ? name : `${name}:${port}`;
}

/** The demo device: a Kuzzle user, its API key, and the credentials file entry naming both. */
async function provisionDemoDevice(host, credentialsFile) {
  const { identity, psk } = DEMO_DEVICE;
  await host.kuzzle.query({
    controller: 'security', action: 'createUser', _id: identity, refresh: 'wait_for',
    body: { content: { profileIds: ['default'] } },
  });
  const key = await host.kuzzle.query({
    controller: 'security', action: 'createApiKey', userId: identity, refresh: 'wait_for', body: { description: 'npm run dev: demo coaps device' },
  });
  const reloads = async () => (await host.kuzzle.coapStats()).credentials[0].reloads;
  const before = await reloads();
  const next = `${credentialsFile}.next`;
  fs.writeFileSync(next, JSON.stringify({ devices: [{ identity, psk, apiKey: key.result._source.token }] }, null, 2));
  fs.renameSync(next, credentialsFile);
  for (let waited = 0; (await reloads()) === before; waited += 100) {
    if (waited > 5000) throw new Error(`the plugin did not reload ${credentialsFile}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** The value of `--name V` (or `--name=V`) on the command line, undefined if absent. */
function optionValue(argv, name) {
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === name) return argv[i + 1] ?? '';
    if (argv[i].startsWith(`${name}=`)) return argv[i].slice(name.length + 1);
  }
  return undefined;
}

/** `--nodes N` (or `--nodes=N`) from the command line, null if absent. */
function nodesOption(argv) {
  const value = optionValue(argv, '--nodes');
  if (value === undefined) return null;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > 20) throw new Error(`--nodes: an integer from 1 to 20, got ${value}`);
  return n;
}

/** `--balancer nginx|nftables` from the command line (with --nodes), 'nginx' if absent. */
function balancerOption(argv) {
  const value = optionValue(argv, '--balancer') ?? 'nginx';
  if (!['nginx', 'nftables'].includes(value)) throw new Error(`--balancer: nginx or nftables, got ${value}`);
  return value;
}

/** The lines that present the balancer (nginx or nftables DNAT). */
function balancerLines(cluster) {
  const { balancer } = cluster;
  if (balancer.kind === 'nftables') {
    return [
      `  balancer   ${balancer.coapUrl}  (nftables DNAT, UDP; a device endpoint sticks to a node; conntrack keeps idle flows ${balancer.udpTimeout} s)`,
      `             ${balancer.httpUrl}  (Kuzzle HTTP, a connection sticks to a node)`,
      `             from this machine's root namespace only; nodes see each device at its own address (${balancer.address} here); rules: nft list table ${balancer.table}`,
      '             no health checks of its own: a node that exits is taken out of it (balancer.setNodes), a hung one is killed by the watchdog first',
    ];
  }
  return [
    `  balancer   ${balancer.coapUrl}  (nginx, UDP; a device sticks to a node; proxy_timeout ${balancer.proxyTimeout})`,
    `             ${balancer.httpUrl}  (Kuzzle HTTP, round robin)`,
    `             nodes see every device behind it at ${balancer.address}; config ${balancer.configFile}`,
  ];
}

/** `npm run dev -- --nodes N [--balancer nftables]`: a cluster behind a balancer; Ctrl-C removes everything. */
async function mainCluster(count, kind) {
  const { startKuzzleCluster } = require('./cluster');
  console.log(`Starting a Kuzzle cluster of ${count} node(s) behind ${kind === 'nftables' ? 'nftables DNAT' : 'nginx'} (network namespaces; needs root)...`);
  const cluster = await startKuzzleCluster({
    nodes: count,
    balancer: kind,
    // Behind nginx every device has nginx's address: an Echo value verifies one device endpoint.
    coap: kind === 'nginx' ? { amplification: { echoScope: 'endpoint' } } : {},
    verbose: process.env.KUZZLE_HOST_VERBOSE === '1',
  });

  let stopping = false;
  const shutdown = async (code) => {
    if (stopping) process.exit(code); // second Ctrl-C: cleanup.js kills and removes at exit
    stopping = true;
    console.log(`\nStopping ${kind === 'nftables' ? 'the DNAT rules' : 'nginx'}, the nodes and Redis, removing the namespaces...`);
    await cluster.stop();
    process.exit(code);
  };
  process.on('SIGINT', () => shutdown(0));
  process.on('SIGTERM', () => shutdown(0));
  for (const node of cluster.nodes) {
    node.exited.then(() => {
      if (stopping) return;
      console.error(`Kuzzle node ${node.index} exited; the others go on (Ctrl-C stops everything)`);
    });
  }
  setInterval(() => {}, 1 << 30); // the cluster's processes are unref'ed: stay up

  await cluster.nodes[0].query({ controller: 'index', action: 'create', index: 'demo' }).catch(() => {});
  await cluster.nodes[0].query({ controller: 'collection', action: 'create', index: 'demo', collection: 'sensors' });

  const { balancer } = cluster;
  const lines = [
    '',
    `Kuzzle 2.56 cluster of ${count} node(s) ready in ${(cluster.bootMs / 1000).toFixed(1)} s (run ${cluster.network.tag})`,
    ...balancerLines(cluster),
    ...cluster.nodes.map((node) => `  node ${node.index}     ${[node.coapUrl, node.httpUrl, node.loopbackHttpUrl].filter(Boolean).join('  ')}  (namespace ${node.ns})`),
    `  Redis      ${cluster.redis.url ?? `${cluster.redis.host}:${cluster.redis.port}`}  (namespace ${cluster.network.bridgeNs}, discarded at exit)`,
    `  Storage    ${cluster.storage.url}  (in-memory Elasticsearch 7 emulation shared by the nodes; nothing is kept)`,
    `  Watchdog   kills a node that gives no answer to GET /_healthcheck ${cluster.watchdog.failures} times in a row (every ${cluster.watchdog.intervalMs} ms, ${cluster.watchdog.timeoutMs} ms timeout), as an orchestrator's liveness probe would`,
    'Try:',
    `  coap-client-notls -m post -A 50 ${balancer.coapUrl}/api/server/now`,
    `  coap-client-notls -m post -A 50 -t 50 -e '{"temperature":21.5}' '${balancer.coapUrl}/api/document/create?index=demo&collection=sensors'`,
    `  coap-client-notls -s 60 -A 50 -m get '${balancer.coapUrl}/api/realtime/subscribe?index=demo&collection=sensors'`,
    `  curl ${balancer.httpUrl}/cluster/_status`,
    `  curl -X POST -H 'content-type: application/json' -d '{"temperature":22}' ${cluster.nodes[count - 1].loopbackHttpUrl ?? cluster.nodes[count - 1].httpUrl}/demo/sensors/_create`,
    'Ctrl-C stops everything.',
  ];
  console.log(lines.join('\n'));
}

async function main() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kuzzle-coap-dev-'));
  const credentialsFile = path.join(dir, 'devices.json');
  fs.writeFileSync(credentialsFile, JSON.stringify({ devices: [] }));
  process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
  const host = await start({
    defaults: {
      port: 7512,
      coap: { host: '::', port: 5683, coaps: { enabled: true, host: '::', port: 5684, credentials: { file: credentialsFile } } },
    },
    verbose: process.env.KUZZLE_HOST_VERBOSE !== '0',
  });

  let stopping = false;
  const shutdown = async (code) => {
    if (stopping) process.exit(code); // second Ctrl-C: cleanup.js kills at exit
    stopping = true;
    console.log('\nStopping Kuzzle and Redis...');
    await host.stop();
    process.exit(code);
  };
  process.on('SIGINT', () => shutdown(0));
  process.on('SIGTERM', () => shutdown(0));
  host.exited.then(({ code, signal }) => {
    if (!stopping) {
      console.error(`Kuzzle exited (${signal || `code ${code}`})`);
      shutdown(1);
    }
  });
  setInterval(() => {}, 1 << 30); // the host's processes are unref'ed: stay up

  // A target for the document:create example.
  await host.kuzzle.query({ controller: 'index', action: 'create', index: 'demo' }).catch(() => {});
  await host.kuzzle.query({ controller: 'collection', action: 'create', index: 'demo', collection: 'sensors' });

  const coap = coapAuthority(host.coapHost, host.coapPort);
  const anyHost = ['::', '0.0.0.0'].includes(host.coapHost);
  const coapsLines = [];
  const coapsTry = [];
  if (host.coapsPort) {
    await provisionDemoDevice(host, credentialsFile);
    const coaps = coapAuthority(host.coapHost, host.coapsPort, 5684);
    const { identity, psk } = DEMO_DEVICE;
    coapsLines.push(
      `  coaps      udp ${host.coapHost.includes(':') ? `[${host.coapHost}]` : host.coapHost}:${host.coapsPort}  (DTLS 1.2, PSK; device credentials in ${credentialsFile}, reloaded when it changes)`,
      `  demo device: PSK identity "${identity}", key "${psk}", runs as Kuzzle user "${identity}" (its API key)`,
    );
    coapsTry.push(
      `  coap-client-openssl -m post -A 50 -u ${identity} -k ${psk} coaps://${coaps}/api/auth/getCurrentUser`,
      `  coap-client-gnutls -m post -t 50 -e '{"temperature":21.5}' -u ${identity} -k ${psk} 'coaps://${coaps}/api/document/create?index=demo&collection=sensors'`,
    );
  }
  const lines = [
    '',
    `Kuzzle 2.56 development host ready in ${(host.bootMs / 1000).toFixed(1)} s`,
    `  HTTP       http://localhost:${host.httpPort}/  (all interfaces)`,
    `  WebSocket  ws://localhost:${host.httpPort}/`,
    host.protocols.includes('coap')
      ? `  CoAP       udp ${host.coapHost.includes(':') ? `[${host.coapHost}]` : host.coapHost}:${host.coapPort}${host.coapHost === '::' ? '  (IPv4 + IPv6)' : anyHost ? '  (IPv4)' : ''}`
      : '  CoAP       NOT LOADED (see the Kuzzle logs)',
    ...coapsLines,
    `  Redis      ${host.redis.url}${host.redis.external ? '  (REDIS_URL)' : '  (private, discarded at exit)'}`,
    `  Storage    ${host.storage === 'memory' ? 'in-memory Elasticsearch 7 emulation (nothing is kept)' : host.storage}`,
    'Try:',
    `  coap-client-notls -m post coap://${coap}/api/server/now`,
    `  coap-client-notls -m post -A 50 coap://${coap}/api/server/now`,
    `  coap-client-notls -m post -t 50 -e '{"temperature":21.5}' 'coap://${coap}/api/document/create?index=demo&collection=sensors'`,
    ...coapsTry,
    'Ctrl-C stops everything.',
  ];
  console.log(lines.join('\n'));
}

// Node 20's `node --test test/` runs every .js file under test/ as a test file:
// do not start a server on 7512/5683 then.
if (process.env.NODE_TEST_CONTEXT) {
  console.log('# test/kuzzle-host/dev.js is the `npm run dev` command, not a test: skipped');
} else {
  let nodes = null;
  let balancer = 'nginx';
  try {
    nodes = nodesOption(process.argv.slice(2));
    balancer = balancerOption(process.argv.slice(2));
  } catch (error) {
    console.error(error.message);
    process.exit(2);
  }
  (nodes === null ? main() : mainCluster(nodes, balancer)).catch((error) => {
    console.error(error.message);
    process.exit(1);
  });
}
