'use strict';
// Resource discovery (RFC 6690, RFC 7252 §7.2): GET /.well-known/core describes /api.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { bootDouble, coap, logOption } = require('./coap-helpers');

let double;
let port;
before(async () => ({ double, port } = await bootDouble()));
after(() => double?.stop());

/** Link format → [{href, attributes: {name: value (unquoted) or true}}] (enough for our links). */
function parseLinks(text) {
  if (text === '') return [];
  return text.split(/,(?=<)/).map((link) => {
    const [target, ...params] = link.match(/<[^>]*>|;[^;]*("[^"]*")?[^;]*/g);
    const attributes = {};
    for (const param of params) {
      const [, name, value] = /^;([^=]+)(?:=(.*))?$/.exec(param);
      attributes[name] = value === undefined ? true : value.replace(/^"(.*)"$/, '$1');
    }
    return { href: target.slice(1, -1), attributes };
  });
}

const discover = (query = '') => coap(port, `/.well-known/core${query}`, ['-m', 'get']);

test('GET /.well-known/core: 2.05, Content-Format 40, a link to /api with rt=kuzzle.api and ct 60 50', async () => {
  const run = await discover();
  assert.equal(run.last.code, '2.05');
  assert.equal(logOption(run.last, 'Content-Format'), 'application/link-format');
  const links = parseLinks(run.payload.toString('utf8'));
  const api = links.find((l) => l.href === '/api');
  assert.ok(api, run.payload.toString());
  assert.equal(api.attributes.rt, 'kuzzle.api');
  assert.deepEqual(api.attributes.ct.split(' ').sort(), ['50', '60']);
  assert.equal(typeof api.attributes.title, 'string');
});

test('?rt=kuzzle.api keeps only the /api link', async () => {
  const run = await discover('?rt=kuzzle.api');
  assert.equal(run.last.code, '2.05');
  assert.deepEqual(parseLinks(run.payload.toString('utf8')).map((l) => l.href), ['/api']);
});

test('?rt=kuzzle.* (prefix) and ?href=/api* select by prefix', async () => {
  for (const query of ['?rt=kuzzle.*', '?href=/api*']) {
    const hrefs = parseLinks((await discover(query)).payload.toString('utf8')).map((l) => l.href);
    assert.ok(hrefs.includes('/api'), `${query}: ${hrefs}`);
  }
});

test('a filter that matches nothing: 2.05 with no link', async () => {
  const run = await discover('?rt=no.such.type');
  assert.equal(run.last.code, '2.05');
  assert.equal(logOption(run.last, 'Content-Format'), 'application/link-format');
  assert.deepEqual(parseLinks(run.payload?.toString('utf8') ?? ''), []);
});

test('GET /.well-known/core with Accept JSON is 4.06: it is served as link-format (40) only', async () => {
  const run = await coap(port, '/.well-known/core', ['-m', 'get', '-A', '50']);
  assert.equal(run.last.code, '4.06');
});

test('POST /.well-known/core is 4.05', async () => {
  const run = await coap(port, '/.well-known/core', ['-m', 'post']);
  assert.equal(run.last.code, '4.05');
});
