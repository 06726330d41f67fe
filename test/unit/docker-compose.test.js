'use strict';

/*
 * deploy/docker-compose/ without Docker (not available where this project is developed and tested):
 * what can be checked here is checked against the real programs that will read those files: nginx -t
 * for nginx.conf, Kuzzle 2.56's own configuration loader and the plugin's validation for the
 * compose file's environment, the health check script against stand-in servers, and the protocols
 * directory the Dockerfile installs into against the one the real-Kuzzle tests use. The rest is
 * consistency between the files: node names, ports, addresses, build context.
 */

const { test } = require('node:test');
const assert = require('node:assert/strict');
const { execFile, spawnSync } = require('node:child_process');
const dgram = require('node:dgram');
const fs = require('node:fs');
const http = require('node:http');
const os = require('node:os');
const path = require('node:path');
// Already in node_modules (kuzzle -> kuzzle-vault); no dependency of our own.
const YAML = require('yaml');
const { nginxBinary, streamModuleLine } = require('../kuzzle-host/cluster/balancer');
const { resolveConfig, DEFAULT_CONFIG } = require('../../dist/config');
const { protocolsDir } = require('../../deploy/docker-compose/protocols-dir');

const ROOT = path.join(__dirname, '..', '..');
const DIR = path.join(ROOT, 'deploy', 'docker-compose');
const NODES = ['kuzzle-1', 'kuzzle-2', 'kuzzle-3'];
const COAP_PREFIX = 'kuzzle_server__protocols__coap__';
const read = (name) => fs.readFileSync(path.join(DIR, name), 'utf8');

/** The compose file as docker compose sees it with no variable set: ${VAR:-default} interpolated, merge keys applied. */
function loadCompose() {
  const text = read('docker-compose.yml').replace(/\$\{(\w+)(:?-([^}]*))?\}/g, (whole, name, hasDefault, value) => {
    assert.ok(hasDefault, `${whole} has no default: the file must work with no variable set`);
    return value;
  });
  return YAML.parse(text, { merge: true });
}

/** nginx.conf without comments. */
function nginxDirectives() {
  return read('nginx.conf').replace(/#.*$/gm, '');
}

/** The upstream block `name` of nginx.conf: its directives, one string each. */
function upstream(conf, name) {
  const block = conf.match(new RegExp(`upstream\\s+${name}\\s*\\{([^}]*)\\}`));
  assert.ok(block, `nginx.conf has no upstream ${name}`);
  return block[1].split(';').map((s) => s.trim().replace(/\s+/g, ' ')).filter(Boolean);
}

/** The server block of the stream section that proxies to `name`. */
function serverFor(conf, name) {
  const block = [...conf.matchAll(/server\s*\{([^}]*)\}/g)].map((m) => m[1]).find((b) => new RegExp(`proxy_pass\\s+${name}\\s*;`).test(b));
  assert.ok(block, `nginx.conf has no server block with proxy_pass ${name}`);
  return block;
}

function seconds(duration) {
  const m = String(duration).match(/^(\d+)(ms|s|m|h|d)?$/);
  assert.ok(m, `cannot read the nginx duration ${duration}`);
  return Number(m[1]) * { ms: 0.001, s: 1, m: 60, h: 3600, d: 86400 }[m[2] ?? 's'];
}

const ipv4 = (address) => address.split('.').reduce((n, part) => n * 256 + Number(part), 0);
function inCidr(address, cidr) {
  const [base, bits] = cidr.split('/');
  const size = 2 ** (32 - Number(bits));
  return Math.floor(ipv4(address) / size) === Math.floor(ipv4(base) / size);
}
const rfc1918 = (address) => ['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16'].some((cidr) => inCidr(address, cidr));

/** The plugin's section (server.protocols.coap) as Kuzzle hands it over, from the environment variables' names. */
function coapSectionFromEnv(environment) {
  const section = {};
  for (const [name, value] of Object.entries(environment)) {
    if (!name.startsWith(COAP_PREFIX)) continue;
    const keys = name.slice(COAP_PREFIX.length).split('__');
    let at = section;
    for (const key of keys.slice(0, -1)) at = at[key] ??= {};
    at[keys.at(-1)] = value;
  }
  return section;
}

test('compose: Elasticsearch 7, Redis, three Kuzzle nodes built from the Dockerfile with the repository as context, nginx', () => {
  const { services, networks } = loadCompose();
  assert.deepEqual(Object.keys(services).sort(), ['elasticsearch', 'kuzzle-1', 'kuzzle-2', 'kuzzle-3', 'nginx', 'redis']);
  assert.match(services.elasticsearch.image, /^kuzzleio\/elasticsearch:7(\b|$)/);
  assert.match(services.redis.image, /^redis:/);
  assert.match(services.nginx.image, /^nginx:/);

  const [network] = Object.keys(networks);
  assert.equal(Object.keys(networks).length, 1, 'one network: Kuzzle advertises the address of its first interface');
  const [{ subnet, ip_range: dynamicRange }] = networks[network].ipam.config;
  const addresses = new Set();
  for (const name of NODES) {
    const node = services[name];
    assert.equal(path.resolve(DIR, node.build.context), ROOT, `${name}: the build context is the repository root`);
    assert.equal(path.resolve(DIR, node.build.context, node.build.dockerfile), path.join(DIR, 'Dockerfile'), `${name}: builds ./Dockerfile`);
    assert.equal(node.image, services['kuzzle-1'].image, 'one image for the three nodes');
    assert.deepEqual(node.environment, services['kuzzle-1'].environment, 'the nodes are configured alike');
    assert.equal(node.hostname, name);
    assert.deepEqual(node.depends_on, { elasticsearch: { condition: 'service_healthy' }, redis: { condition: 'service_healthy' } });
    assert.equal(node.restart, 'unless-stopped', 'a node that exits (Kuzzle kills a node evicted from the cluster) comes back');
    assert.deepEqual(Object.keys(node.networks), [network]);
    const address = node.networks[network].ipv4_address;
    assert.ok(rfc1918(address), `${name}: ${address} must be private (Kuzzle's cluster.ip "private")`);
    assert.ok(inCidr(address, subnet), `${name}: ${address} is outside ${subnet}`);
    assert.ok(!inCidr(address, dynamicRange), `${name}: ${address} is inside the range Docker hands out (${dynamicRange})`);
    addresses.add(address);
  }
  assert.equal(addresses.size, NODES.length, 'each node has its own address');
  for (const name of ['elasticsearch', 'redis', 'nginx']) assert.deepEqual(services[name].networks, [network], `${name} is on the nodes' network`);

  // nginx: its configuration file, published ports, started once the nodes answer their health check
  const nginx = services.nginx;
  assert.deepEqual(nginx.volumes, ['./nginx.conf:/etc/nginx/nginx.conf:ro']);
  assert.ok(fs.existsSync(path.join(DIR, 'nginx.conf')));
  assert.deepEqual(nginx.ports.sort(), ['5683:5683/udp', '7512:7512/tcp']);
  assert.deepEqual(nginx.depends_on, Object.fromEntries(NODES.map((n) => [n, { condition: 'service_healthy' }])));
  for (const name of ['elasticsearch', 'redis', ...NODES]) assert.ok(services[name].healthcheck?.test?.length > 0, `${name} has a health check`);
});

test('compose: the environment variables say what Kuzzle 2.56 and the plugin read, under names they know', () => {
  const { services } = loadCompose();
  const environment = services['kuzzle-1'].environment;
  const nginxConf = nginxDirectives();

  // Kuzzle's own loader (rc + its typing of strings), in a process whose environment is the container's.
  const home = fs.mkdtempSync(path.join(os.tmpdir(), 'kzc-compose-env-'));
  try {
    const loader = require.resolve('kuzzle/dist/lib/config');
    const run = spawnSync(process.execPath, ['-e', `
      const c = require(${JSON.stringify(loader)}).loadConfig();
      process.stdout.write(JSON.stringify({ storage: c.services.storageEngine.client.node, internalCache: c.services.internalCache.node,
        memoryStorage: c.services.memoryStorage.node, cluster: c.cluster, coap: c.server.protocols.coap }));
    `], { cwd: home, env: { PATH: process.env.PATH, HOME: home, ...environment }, encoding: 'utf8' });
    assert.equal(run.status, 0, `Kuzzle's configuration loader failed: ${run.stderr}`);
    const config = JSON.parse(run.stdout);
    assert.equal(config.storage, 'http://elasticsearch:9200');
    assert.equal(new URL(config.storage).hostname, 'elasticsearch');
    assert.ok(services[new URL(config.storage).hostname], 'Elasticsearch is reached by its service name');
    for (const cache of [config.internalCache, config.memoryStorage]) {
      assert.equal(cache.host, 'redis');
      assert.ok(services[cache.host]);
    }
    assert.equal(config.cluster.enabled, true);
    assert.deepEqual(config.cluster.ports, { command: 7510, sync: 7511 });
    assert.equal(config.cluster.ip, 'private');

    // Kuzzle tells a protocol that a token expired only when its section says both, as booleans.
    assert.equal(config.coap.enabled, true);
    assert.equal(config.coap.realtimeNotifications, true);
    // What the plugin makes of Kuzzle's section: unknown options are refused, so a misspelled name fails here.
    const coap = resolveConfig(config.coap);
    assert.deepEqual(resolveConfig(coapSectionFromEnv(environment)), coap, 'Kuzzle hands the plugin what the variables say');
    assert.equal(coap.host, '0.0.0.0', 'the node listens on its container address');
    assert.equal(coap.plain, true);
    assert.equal(coap.coaps.enabled, false);
    for (const entry of upstream(nginxConf, 'kuzzle_coap').filter((d) => d.startsWith('server '))) {
      assert.equal(Number(entry.split(' ')[1].split(':')[1]), coap.port, `${entry}: nginx sends CoAP where the nodes listen`);
    }
    // nginx keeps a device's session longer than an observe relation stays quiet (heartbeat within 3/4 of Max-Age, checked every second).
    const quiet = 0.75 * coap.observe.maxAge + 1;
    assert.ok(coap.observe.maxAge > 0, 'heartbeats are on');
    assert.ok(seconds(serverFor(nginxConf, 'kuzzle_coap').match(/proxy_timeout\s+(\S+);/)[1]) > quiet);
    // ...and Docker's published UDP port does too (docker-proxy forgets a flow after 90 s).
    assert.ok(quiet < 90, `a quiet relation (${quiet} s) outlives docker-proxy's UDP flows`);
    assert.ok(coap.observe.maxAge <= DEFAULT_CONFIG.observe.maxAge);
  } finally {
    fs.rmSync(home, { recursive: true, force: true });
  }

  // Every other kuzzle_ name is a key of Kuzzle's configuration: rc would silently add a misspelled one.
  const defaults = require('kuzzle/dist/lib/config/default.config').default;
  for (const name of Object.keys(environment).filter((n) => n.startsWith('kuzzle_') && !n.startsWith(COAP_PREFIX))) {
    const keys = name.slice('kuzzle_'.length).split('__');
    let at = defaults;
    for (const key of keys) {
      assert.ok(at !== null && typeof at === 'object' && key in at, `${name}: "${key}" is not in Kuzzle's configuration`);
      at = at[key];
    }
  }
});

test('nginx.conf passes nginx -t (node names replaced by loopback addresses) and follows the test cluster\'s balancer', () => {
  const conf = nginxDirectives();
  // the official image's command passes -g 'daemon off;' and has the stream module built in
  assert.doesNotMatch(conf, /^\s*daemon\b/m);
  assert.doesNotMatch(conf, /^\s*load_module\b/m);
  assert.match(conf, /^\s*worker_processes\s+1;/m, 'one worker, or reuseport: a device\'s datagrams must reach one session');

  const coapServers = upstream(conf, 'kuzzle_coap');
  assert.equal(coapServers[0], 'hash $remote_addr$remote_port consistent');
  assert.deepEqual(coapServers.slice(1).map((s) => s.split(' ')[1]), NODES.map((n) => `${n}:5683`));
  assert.deepEqual(upstream(conf, 'kuzzle_http').map((s) => s.split(' ')[1]), NODES.map((n) => `${n}:7512`), 'HTTP: round robin over the nodes');
  for (const entry of [...coapServers.slice(1), ...upstream(conf, 'kuzzle_http')]) assert.match(entry, /max_fails=\d+ fail_timeout=\d+s$/);
  const coapServer = serverFor(conf, 'kuzzle_coap');
  assert.match(coapServer, /listen\s+5683\s+udp\s*;/);
  assert.doesNotMatch(coapServer, /proxy_responses/, 'nginx would end the session before the notifications');
  assert.match(serverFor(conf, 'kuzzle_http'), /listen\s+7512\s*;/);

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kzc-compose-nginx-'));
  try {
    const bin = nginxBinary();
    let replaced = 0;
    const testable = read('nginx.conf').replace(/\bkuzzle-(\d)(?=:)/g, (whole, i) => {
      replaced++;
      return `127.0.0.${10 + Number(i)}`;
    });
    assert.equal(replaced, 6);
    fs.writeFileSync(path.join(dir, 'nginx.conf'), `${streamModuleLine(bin)}\n${testable}`);
    // Output to a file, as Docker gives a container a FIFO: nginx opens /dev/stdout for the session
    // log, which a socket (what node's pipes are) refuses with ENXIO.
    const outFile = path.join(dir, 'output');
    const out = fs.openSync(outFile, 'w');
    const run = spawnSync(bin, ['-t', '-p', dir, '-c', path.join(dir, 'nginx.conf'), '-e', path.join(dir, 'error.log')], { stdio: ['ignore', out, out] });
    fs.closeSync(out);
    const output = fs.readFileSync(outFile, 'utf8');
    assert.equal(run.status, 0, `nginx -t:\n${output}`);
    assert.match(output, /syntax is ok/);
    assert.match(output, /test is successful/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

/** Runs healthcheck.js as the compose file does, against host ports; resolves to { code, stderr }. */
function runHealthcheck(httpPort, coapPort) {
  return new Promise((resolve) => {
    execFile(process.execPath, [path.join(DIR, 'healthcheck.js'), '127.0.0.1', String(httpPort), String(coapPort)], { timeout: 10000 }, (error, stdout, stderr) => {
      resolve({ code: error ? error.code : 0, stderr });
    });
  });
}

test('healthcheck.js: healthy only when GET /_healthcheck gives 200 and a CoAP ping gets a RST', async () => {
  const { services } = loadCompose();
  const [, script, ...args] = services['kuzzle-1'].healthcheck.test.slice(1);
  assert.equal(services['kuzzle-1'].healthcheck.test[0], 'CMD');
  assert.equal(script, '/opt/kuzzle-coap/healthcheck.js');
  assert.deepEqual(args, ['127.0.0.1', '7512', String(resolveConfig(coapSectionFromEnv(services['kuzzle-1'].environment)).port)]);
  assert.match(read('Dockerfile'), /cp \/build\/tools\/healthcheck\.js \/stage\/opt\/kuzzle-coap\//, 'the image has the script where the compose file runs it');

  let status = 200;
  const requests = [];
  const server = http.createServer((request, response) => {
    requests.push(request.url);
    response.writeHead(request.url === '/_healthcheck' ? status : 404).end();
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const coap = dgram.createSocket('udp4');
  coap.on('message', (m, from) => {
    // an empty CON gets a RST with its message ID, as the plugin answers
    if (m.length === 4 && m[0] === 0x40 && m[1] === 0) coap.send(Buffer.from([0x70, 0x00, m[2], m[3]]), from.port, from.address);
  });
  await new Promise((resolve) => coap.bind(0, '127.0.0.1', resolve));
  const httpPort = server.address().port;
  const coapPort = coap.address().port;
  try {
    assert.deepEqual(await runHealthcheck(httpPort, coapPort), { code: 0, stderr: '' });
    assert.deepEqual(requests, ['/_healthcheck']);

    status = 503;
    const down = await runHealthcheck(httpPort, coapPort);
    assert.equal(down.code, 1);
    assert.match(down.stderr, /GET \/_healthcheck: HTTP 503/);
  } finally {
    server.close();
  }
  coap.close();
  const closed = await runHealthcheck(httpPort, coapPort);
  assert.equal(closed.code, 1);
  assert.match(closed.stderr, /GET \/_healthcheck: .*ECONNREFUSED/);
  assert.match(closed.stderr, /CoAP ping of udp 127\.0\.0\.1:\d+: /);
});

test('Dockerfile: built on the Kuzzle image it runs on, installed where that Kuzzle loads protocols, no compiler left', () => {
  // protocols-dir.js finds, in Kuzzle 2.56's code, the directory the real-Kuzzle tests link the plugin into.
  const entryPoint = require.resolve('kuzzle/dist/lib/core/network/entryPoint.js');
  const kuzzleRoot = path.dirname(require.resolve('kuzzle/package.json'));
  assert.equal(protocolsDir(kuzzleRoot), path.join(path.dirname(entryPoint), '../../../protocols/enabled'));
  assert.throws(() => protocolsDir(os.tmpdir()));

  const dockerfile = read('Dockerfile').replace(/\\\n/g, ' ');
  const stages = dockerfile.split(/^FROM\s+/m).slice(1);
  assert.equal(stages.length, 2);
  assert.match(dockerfile, /^ARG KUZZLE_IMAGE=kuzzleio\/kuzzle:2$/m);
  for (const stage of stages) assert.match(stage, /^\$\{KUZZLE_IMAGE\}/, 'both stages on the same Kuzzle image: the addon is built for the node binary it runs in');
  const [build, runtime] = stages;
  assert.match(build, /apt-get install -y --no-install-recommends python3 make g\+\+/);
  assert.match(build, /npm ci --omit=dev/);
  assert.match(build, /node \/build\/tools\/protocols-dir\.js \/var\/app/);
  assert.doesNotMatch(runtime, /^RUN\b/m, 'the final image only receives files');
  assert.match(runtime, /^COPY --from=build \/stage\/ \/$/m);

  // npm ci --omit=dev builds the package only because its lifecycle does: install (node-gyp) and prepare (tsc).
  const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'));
  assert.equal(pkg.scripts.install, 'node-gyp rebuild');
  assert.equal(pkg.scripts.prepare, 'npm run build');
  assert.match(pkg.scripts.build, /^tsc\b/);
  assert.equal(pkg.main, 'dist/index.js');
  const lock = JSON.parse(fs.readFileSync(path.join(ROOT, 'package-lock.json'), 'utf8'));
  for (const name of ['typescript', '@types/node']) assert.ok(lock.packages[`node_modules/${name}`]?.version, `the lock file pins ${name}`);

  // The Dockerfile-specific ignore file lets through exactly what is copied from the context.
  const sources = [...dockerfile.matchAll(/^COPY\s+(?!--from)(.*)$/gm)].flatMap((m) => m[1].trim().split(/\s+/).slice(0, -1))
    .map((s) => s.replace(/\/$/, ''));
  const ignore = read('Dockerfile.dockerignore').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
  assert.equal(ignore[0], '*', 'an allow-list');
  assert.deepEqual([...new Set(sources)].sort(), ignore.slice(1).map((l) => l.replace(/^!/, '')).sort());
  for (const source of sources) assert.ok(fs.existsSync(path.join(ROOT, source)), `${source} is in the repository`);
});
