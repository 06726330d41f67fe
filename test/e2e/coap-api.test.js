'use strict';
/**
 * The Kuzzle API over CoAP, end to end: a real Kuzzle 2.56 (test/kuzzle-host) with this plugin,
 * real clients (libcoap's coap-client-notls, node-coap, a raw UDP endpoint), nothing stubbed.
 *
 *   npm run build && node --test --test-concurrency=1 test/e2e/coap-api.test.js
 */
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const coap = require('coap');
const { startKuzzleHost } = require('../kuzzle-host');
const { coapClient, decodeWithCbor2, killAll } = require('../support/peers');
const { CF, option } = require('../support/raw');
const { removeTmp, sleep, tmpFile } = require('../support/util');
const {
  E2E_PLUGIN, coapJson, encodeCbor, fetchBlockwise, kuzzleHttp, nodeCoap, rawEndpoint, waitUntil,
} = require('./helpers');

const IDLE_TIMEOUT_MS = 1500;

let host;
let http;
let agent; // node-coap: one endpoint for the whole file
const raws = new Set();
let url; // coap://127.0.0.1:<port>

before(async () => {
  host = await startKuzzleHost({
    coap: { idleTimeoutMs: IDLE_TIMEOUT_MS },
    // NEEDS A HOST OPTION THAT DOES NOT EXIST YET (test/kuzzle-host is not ours to edit):
    // `appSetup`, the path of a module that child.js requires and calls, with the Backend,
    // before app.start() (here: helpers.js' appSetup, a plugin "coap-e2e" with a controller).
    // Until the host supports it, it is ignored and only the plugin-controller test fails.
    appSetup: require.resolve('./helpers'),
  });
  http = kuzzleHttp(host);
  url = `coap://127.0.0.1:${host.coapPort}`;
  agent = new coap.Agent({ type: 'udp4' });
});

after(async () => {
  await killAll();
  for (const raw of raws) await raw.close();
  agent?.close();
  removeTmp();
  await host?.stop();
});

async function raw(behaviour) {
  const endpoint = await rawEndpoint(host.coapPort, behaviour);
  raws.add(endpoint);
  return endpoint;
}

const request = (options) => nodeCoap({ port: host.coapPort, agent, ...options });
const withoutMeta = ({ _kuzzle_info, ...content }) => content;

test('server:now: CBOR by default, JSON on request; coap-client and node-coap', async () => {
  const started = Date.now();
  const cborRun = await coapClient(['-m', 'post', '-B', '5', `${url}/api/server/now`]);
  assert.equal(cborRun.exit, 0, cborRun.stderr);
  const decoded = decodeWithCbor2(cborRun.stdout); // an independent CBOR decoder
  assert.equal(decoded.value.status, 200);
  assert.equal(decoded.value.controller, 'server');
  assert.equal(decoded.types.result.now, 'int', 'the timestamp is a CBOR integer');
  assert.ok(decoded.value.result.now >= started - 1000 && decoded.value.result.now <= Date.now() + 1000);

  const json = await coapJson(`${url}/api/server/now`);
  assert.equal(json.code, '2.xx', JSON.stringify(json.body));
  assert.equal(json.body.status, 200);
  assert.ok(Math.abs(json.body.result.now - Date.now()) < 2000);

  const viaNodeCoap = await request({ pathname: '/api/server/now' });
  assert.equal(viaNodeCoap.code, '2.05');
  assert.equal(viaNodeCoap.contentFormat, CF.CBOR);
  assert.ok(Math.abs(viaNodeCoap.body.result.now - Date.now()) < 2000);
  const compact = await request({ pathname: '/api/server/now', query: 'envelope=compact', accept: CF.JSON });
  assert.equal(compact.contentFormat, CF.JSON);
  assert.deepEqual(Object.keys(compact.body), ['now']);
});

/** The parts of server:info that do not change from one call to the next. */
function stableInfo(result) {
  const { kuzzle, services } = result.serverInfo;
  const { spaceUsed, ...internalStorage } = services.internalStorage;
  return {
    api: kuzzle.api,
    application: kuzzle.application,
    nodeVersion: kuzzle.nodeVersion,
    plugins: kuzzle.plugins,
    version: kuzzle.version,
    cpus: kuzzle.system.cpus.map((cpu) => cpu.model),
    internalStorage,
    cacheMode: services.internalCache.mode,
  };
}

test('server:info: a large answer in Block2 blocks, equal to HTTP server:info in its stable parts', async () => {
  const expected = stableInfo(await http.ok({ controller: 'server', action: 'info' }));
  assert.ok(JSON.stringify(expected).length > 4096, 'server:info is large enough to need several blocks');

  // coap-client, default block handling (JSON, then CBOR)
  const json = await coapJson(`${url}/api/server/info`);
  assert.equal(json.code, '2.xx');
  assert.deepEqual(stableInfo(json.body.result), expected);
  const cborRun = await coapClient(['-m', 'post', '-B', '8', `${url}/api/server/info`]);
  assert.equal(cborRun.exit, 0, cborRun.stderr);
  assert.deepEqual(stableInfo(decodeWithCbor2(cborRun.stdout).value.result), expected);

  // coap-client -b 64 (libcoap 4.3.1 turns -b into Block1 on a POST; the answer must still be whole)
  const small = await coapJson(`${url}/api/server/info`, { extra: ['-b', '64'] });
  assert.equal(small.code, '2.xx');
  assert.deepEqual(stableInfo(small.body.result), expected);

  // 64-byte Block2 blocks asked from the first request (RFC 7959 §2.4), by a raw endpoint
  const endpoint = await raw();
  const { blocks, payload, contentFormat } = await fetchBlockwise(endpoint, { method: 'POST', path: '/api/server/info' }, 2);
  assert.ok(blocks.length > 100, `${blocks.length} blocks`);
  for (const [i, block] of blocks.entries()) {
    assert.equal(block.code, '2.05');
    assert.equal(block.block2.num, i);
    assert.equal(block.block2.szx, 2, 'the server keeps the 64-byte size the client asked for');
    assert.equal(block.payload.length, i < blocks.length - 1 ? 64 : block.payload.length);
    assert.ok(block.payload.length <= 64);
    assert.deepEqual(option(block, 'ETag'), option(blocks[0], 'ETag'), 'one representation');
  }
  assert.equal(contentFormat, CF.CBOR);
  assert.deepEqual(stableInfo(decodeWithCbor2(payload).value.result), expected);
});

test('auth:login over CoAP for a user created over HTTP; auth:checkToken; document:create with ?jwt=', async () => {
  // Single-word ids: the host's in-memory Elasticsearch matches `match` queries word by word even on
  // keyword fields, so the local strategy would mistake "coap-admin" for "coap-user" (shared "coap").
  const kuid = 'alice';
  await http.ok({
    controller: 'security',
    action: 'createUser',
    _id: kuid,
    body: { content: { profileIds: ['default'] }, credentials: { local: { username: 'alice', password: 'Secret-1!' } } },
  });
  await http.ok({ controller: 'index', action: 'create', index: 'coap-api' });
  await http.ok({ controller: 'collection', action: 'create', index: 'coap-api', collection: 'things' });

  const wrong = await coapJson(`${url}/api/auth/login?strategy=local`, { json: { username: 'alice', password: 'nope' } });
  assert.equal(wrong.code, '4.01', JSON.stringify(wrong.body));
  assert.equal(wrong.body.status, 401);

  const login = await coapJson(`${url}/api/auth/login?strategy=local`, { json: { username: 'alice', password: 'Secret-1!' } });
  assert.equal(login.code, '2.xx', JSON.stringify(login.body));
  assert.equal(login.body.result._id, kuid);
  const { jwt } = login.body.result;
  assert.match(jwt, /^[\w-]+\.[\w-]+\.[\w-]+$/);

  const check = await coapJson(`${url}/api/auth/checkToken`, { json: { token: jwt } });
  assert.equal(check.code, '2.xx');
  assert.equal(check.body.result.valid, true);
  assert.equal(check.body.result.kuid, kuid);

  const created = await coapJson(`${url}/api/document/create?index=coap-api&collection=things`, { jwt, json: { temperature: 21.5 } });
  assert.equal(created.code, '2.xx', JSON.stringify(created.body));
  const stored = await http.ok({ controller: 'document', action: 'get', index: 'coap-api', collection: 'things', _id: created.body.result._id });
  assert.equal(stored._source._kuzzle_info.author, kuid, 'created as the logged-in user');
  assert.equal(stored._source.temperature, 21.5);

  // the same with `?jwt=` in the URI, sent whole by node-coap (coap-client cannot: see helpers.coapJson)
  const viaQuery = await request({
    pathname: '/api/document/create', query: `index=coap-api&collection=things&jwt=${jwt}`, payload: encodeCbor({ temperature: 22 }), contentFormat: CF.CBOR,
  });
  assert.equal(viaQuery.code, '2.05', JSON.stringify(viaQuery.body));
  const storedToo = await http.ok({ controller: 'document', action: 'get', index: 'coap-api', collection: 'things', _id: viaQuery.body.result._id });
  assert.equal(storedToo._source._kuzzle_info.author, kuid);

  // the same request without the token is anonymous's
  const anonymous = await coapJson(`${url}/api/document/create?index=coap-api&collection=things`, { json: { temperature: 3 } });
  assert.equal(anonymous.body.result._source._kuzzle_info.author, '-1');
});

test('index, collection and document actions with CBOR bodies; HTTP reads back the same content', async () => {
  const target = { index: 'coap-cbor', collection: 'probes' };
  const where = `index=${target.index}&collection=${target.collection}`;

  const index = await request({ pathname: '/api/index/create', query: `index=${target.index}` });
  assert.equal(index.code, '2.05', JSON.stringify(index.body));
  const mappings = { properties: { name: { type: 'keyword' }, ts: { type: 'long' }, temp: { type: 'float' } } };
  const collection = await request({ pathname: '/api/collection/create', query: where, payload: encodeCbor({ mappings }), contentFormat: CF.CBOR });
  assert.equal(collection.code, '2.05', JSON.stringify(collection.body));
  assert.deepEqual(
    (await http.ok({ controller: 'collection', action: 'list', index: target.index })).collections,
    [{ name: 'probes', type: 'stored' }],
  );

  const ts = 1795833083021; // milliseconds, beyond 32 bits
  const content = {
    name: 'probe-1', ts, temp: 21.5, ratio: 0.1, negative: -40, maxSafe: 2 ** 53 - 1,
    nested: { list: [1, 2.5, 'x', true, null], empty: {} }, unicode: 'é✓',
  };
  // create: coap-client with the CBOR body in a file
  const cborFile = tmpFile(encodeCbor(content), 'probe.cbor');
  const created = await coapJson(`${url}/api/document/create?${where}&_id=p1`, { cborFile });
  assert.equal(created.code, '2.xx', JSON.stringify(created.body));
  assert.deepEqual(withoutMeta(created.body.result._source), content);

  // get: node-coap, CBOR answer, checked by an independent decoder too
  const got = await request({ pathname: '/api/document/get', query: `${where}&_id=p1` });
  assert.equal(got.code, '2.05');
  assert.equal(got.contentFormat, CF.CBOR);
  assert.deepEqual(withoutMeta(got.body.result._source), content);
  const types = decodeWithCbor2(got.payload).types.result._source;
  assert.equal(types.ts, 'int');
  assert.equal(types.maxSafe, 'int');
  assert.equal(types.temp, 'float');
  assert.equal(types.ratio, 'float');
  assert.equal(types._kuzzle_info.createdAt, 'int');

  // HTTP sees the same document
  const viaHttp = await http.ok({ controller: 'document', action: 'get', ...target, _id: 'p1' });
  assert.deepEqual(withoutMeta(viaHttp._source), content);
  assert.equal(viaHttp._source.ts, ts);
  assert.deepEqual(viaHttp._source._kuzzle_info, got.body.result._source._kuzzle_info);

  // update
  const changes = { temp: 22.25, ts: ts + 1000, nested: { list: [3] } };
  const updated = await request({ pathname: '/api/document/update', query: `${where}&_id=p1`, payload: encodeCbor(changes), contentFormat: CF.CBOR });
  assert.equal(updated.code, '2.05', JSON.stringify(updated.body));
  assert.equal(updated.body.result._version, 2);
  const merged = { ...content, ...changes, nested: { list: [3], empty: {} } };
  assert.deepEqual(withoutMeta((await http.ok({ controller: 'document', action: 'get', ...target, _id: 'p1' }))._source), merged);

  await http.ok({ controller: 'document', action: 'create', ...target, _id: 'p2', body: { name: 'probe-2', ts, temp: 12 } });

  // search and count, CBOR bodies
  const search = await request({
    pathname: '/api/document/search',
    query: where,
    payload: encodeCbor({ query: { range: { temp: { gte: 20 } } } }),
    contentFormat: CF.CBOR,
  });
  assert.equal(search.code, '2.05', JSON.stringify(search.body));
  assert.equal(search.body.result.total, 1);
  assert.equal(search.body.result.hits[0]._id, 'p1');
  assert.deepEqual(withoutMeta(search.body.result.hits[0]._source), merged);
  const count = await request({ pathname: '/api/document/count', query: where, payload: encodeCbor({ query: { term: { name: 'probe-2' } } }), contentFormat: CF.CBOR });
  assert.equal(count.code, '2.05');
  assert.equal(count.body.result.count, 1);
  assert.equal((await request({ pathname: '/api/document/count', query: where })).body.result.count, 2);

  // delete
  const deleted = await request({ pathname: '/api/document/delete', query: `${where}&_id=p1` });
  assert.equal(deleted.code, '2.05');
  assert.equal(deleted.body.result._id, 'p1');
  const gone = await http.api({ controller: 'document', action: 'get', ...target, _id: 'p1' });
  assert.equal(gone.status, 404);
});

test(`a plugin controller with a slash in its name: /api/${E2E_PLUGIN}/sensors/read`, async () => {
  const viaHttp = await http.api({ controller: `${E2E_PLUGIN}/sensors`, action: 'read' });
  assert.equal(viaHttp.status, 200,
    `the host did not register the test plugin "${E2E_PLUGIN}" (Kuzzle: ${viaHttp.error?.id}): test/kuzzle-host needs an ` +
    '`appSetup` option, a module path that child.js requires and calls with the Backend before app.start()');

  const json = await coapJson(`${url}/api/${E2E_PLUGIN}/sensors/read?room=kitchen&floor=2`, { json: { x: 1 } });
  assert.equal(json.code, '2.xx', JSON.stringify(json.body));
  assert.equal(json.body.controller, `${E2E_PLUGIN}/sensors`);
  assert.deepEqual(json.body.result, {
    controller: `${E2E_PLUGIN}/sensors`, action: 'read', args: { room: 'kitchen', floor: '2' }, body: { x: 1 }, user: '-1', protocol: 'coap',
  });
  const cbor = await request({ pathname: `/api/${E2E_PLUGIN}/sensors/read`, payload: encodeCbor({ y: [1, 2] }), contentFormat: CF.CBOR });
  assert.equal(cbor.code, '2.05');
  assert.deepEqual(cbor.body.result.body, { y: [1, 2] });
  const missing = await coapJson(`${url}/api/${E2E_PLUGIN}/nothing/read`);
  assert.equal(missing.code, '4.04');
  assert.equal(missing.body.error.id, 'api.process.controller_not_found');
});

test('Kuzzle errors: a missing document is 4.04 with services.storage.not_found', async () => {
  const json = await coapJson(`${url}/api/document/get?index=coap-api&collection=things&_id=nope`);
  assert.equal(json.code, '4.04');
  assert.equal(json.body.status, 404);
  assert.equal(json.body.error.id, 'services.storage.not_found');

  const cbor = await request({ pathname: '/api/document/get', query: 'index=coap-api&collection=things&_id=nope' });
  assert.equal(cbor.code, '4.04');
  assert.equal(cbor.contentFormat, CF.CBOR);
  assert.equal(cbor.body.error.id, 'services.storage.not_found');
  const compact = await request({ pathname: '/api/document/get', query: 'index=coap-api&collection=things&_id=nope&envelope=compact' });
  assert.equal(compact.code, '4.04');
  assert.equal(compact.body.id, 'services.storage.not_found');
  assert.equal(compact.body.status, 404);

  const unknownIndex = await coapJson(`${url}/api/document/get?index=nowhere&collection=things&_id=nope`);
  assert.equal(unknownIndex.code, '4.12', 'Kuzzle answers 412 for an unknown index');
  assert.equal(unknownIndex.body.error.id, 'services.storage.unknown_index');
});

test('Kuzzle errors: a forged token is 4.01', async () => {
  const json = await coapJson(`${url}/api/server/now?jwt=abc.def.ghi`);
  assert.equal(json.code, '4.01', JSON.stringify(json.body));
  const viaHttp = await http.api({ controller: 'server', action: 'now' }, { token: 'abc.def.ghi' });
  assert.equal(viaHttp.status, 401);
  assert.equal(json.body.error.id, viaHttp.error.id);
  const cbor = await request({ pathname: '/api/server/now', query: 'jwt=abc.def.ghi' });
  assert.equal(cbor.code, '4.01');
});

async function coapConnections() {
  const metrics = await http.ok({ controller: 'server', action: 'metrics' });
  return metrics.network.connections.coap ?? 0;
}

test(`server:metrics counts the plugin's connections (protocol "coap"); idle ones go after ${IDLE_TIMEOUT_MS} ms`, async () => {
  // connections of the previous tests go first
  assert.equal(await waitUntil(async () => (await coapConnections()) === 0, 4 * IDLE_TIMEOUT_MS), true, 'earlier connections removed');

  const [busy, idle1, idle2] = [await raw(), await raw(), await raw()];
  for (const endpoint of [busy, idle1, idle2]) {
    assert.equal((await endpoint.request({ path: '/api/server/now' })).code, '2.05');
  }
  // a second request from one endpoint is the same connection
  assert.equal((await idle1.request({ path: '/api/server/now' })).code, '2.05');
  assert.equal(await coapConnections(), 3);

  // `busy` keeps talking, the two others say nothing
  const until = Date.now() + 2.5 * IDLE_TIMEOUT_MS;
  let lastRequestAt;
  while (Date.now() < until) {
    lastRequestAt = Date.now();
    await busy.request({ path: '/api/server/now' });
    await sleep(IDLE_TIMEOUT_MS / 4);
  }
  assert.equal(await coapConnections(), 1, 'the idle endpoints were removed, the busy one stays');

  assert.equal(await waitUntil(async () => (await coapConnections()) === 0, 4 * IDLE_TIMEOUT_MS), true);
  const quietFor = Date.now() - lastRequestAt;
  assert.ok(quietFor >= IDLE_TIMEOUT_MS, `removed after ${quietFor} ms of silence`);

  // a removed endpoint that speaks again gets a new connection; the transport forgot it too, so it
  // shows again that it receives at its address (4.01 + Echo, then the answer)
  const again = await idle2.requestWithEcho({ path: '/api/server/now' });
  assert.equal(again.first?.code, '4.01');
  assert.equal(again.response.code, '2.05');
  assert.equal(await coapConnections(), 1);
});

test('restricted rights: anonymous gets 4.01, a logged-in user without the right 4.03', async () => {
  // from now on anonymous has (almost) no rights
  await http.ok({
    controller: 'security',
    action: 'createFirstAdmin',
    _id: 'root',
    reset: true,
    body: { content: {}, credentials: { local: { username: 'root', password: 'Admin-Secret-1' } } },
  });
  const { jwt: adminJwt } = await http.ok({ controller: 'auth', action: 'login', strategy: 'local', body: { username: 'root', password: 'Admin-Secret-1' } });
  const admin = { token: adminJwt };

  const document = { index: 'coap-api', collection: 'things' };
  const anonymousHttp = await http.api({ controller: 'document', action: 'create', ...document, body: { a: 1 } });
  assert.equal(anonymousHttp.status, 401, 'Kuzzle answers 401 to anonymous');
  const anonymous = await coapJson(`${url}/api/document/create?index=coap-api&collection=things`, { json: { a: 1 } });
  assert.equal(anonymous.code, '4.01', JSON.stringify(anonymous.body));
  assert.equal(anonymous.body.error.id, anonymousHttp.error.id);

  // a user whose profile allows reading documents, not writing them
  await http.ok({
    controller: 'security',
    action: 'createRole',
    _id: 'coap-reader',
    body: { controllers: { auth: { actions: { '*': true } }, document: { actions: { get: true } } } },
  }, admin);
  await http.ok({ controller: 'security', action: 'createProfile', _id: 'coap-reader', body: { policies: [{ roleId: 'coap-reader' }] } }, admin);
  await http.ok({
    controller: 'security',
    action: 'createUser',
    _id: 'reader',
    body: { content: { profileIds: ['coap-reader'] }, credentials: { local: { username: 'reader', password: 'Reader-Secret-1' } } },
  }, admin);
  const login = await coapJson(`${url}/api/auth/login?strategy=local`, { json: { username: 'reader', password: 'Reader-Secret-1' } });
  assert.equal(login.code, '2.xx', JSON.stringify(login.body));
  const { jwt } = login.body.result;

  const forbiddenHttp = await http.api({ controller: 'document', action: 'create', ...document, body: { a: 2 } }, { token: jwt });
  assert.equal(forbiddenHttp.status, 403, 'Kuzzle answers 403 to a logged-in user without the right');
  const forbidden = await coapJson(`${url}/api/document/create?index=coap-api&collection=things`, { jwt, json: { a: 2 } });
  assert.equal(forbidden.code, '4.03', JSON.stringify(forbidden.body));
  assert.equal(forbidden.body.error.id, forbiddenHttp.error.id);

  const stored = await http.ok({ controller: 'document', action: 'search', ...document, body: {} }, admin);
  const readable = await coapJson(`${url}/api/document/get?index=coap-api&collection=things&_id=${stored.hits[0]._id}`, { jwt });
  assert.equal(readable.code, '2.xx', 'the right it has works');
});
