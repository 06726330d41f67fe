'use strict';
const { test } = require('node:test');
const assert = require('node:assert/strict');
const { serializeLinks, filterLinks } = require('../../dist/coap/linkFormat');

const links = [
  { href: '/api', attributes: { rt: 'kuzzle.api', ct: [60, 50], title: 'POST "here"' } },
  { href: '/api/realtime/subscribe', attributes: { rt: ['kuzzle.subscribe', 'core.s'], obs: true, ct: 60 } },
];

test('serializeLinks writes RFC 6690 link format', () => {
  assert.equal(
    serializeLinks(links),
    '</api>;rt="kuzzle.api";ct="60 50";title="POST \\"here\\"",' +
      '</api/realtime/subscribe>;rt="kuzzle.subscribe core.s";obs;ct=60',
  );
});

test('filterLinks applies one attribute filter, with a trailing * as prefix match', () => {
  assert.deepEqual(filterLinks(links, ['rt=kuzzle.api']).map((l) => l.href), ['/api']);
  assert.deepEqual(filterLinks(links, ['rt=kuzzle.*']).map((l) => l.href), ['/api', '/api/realtime/subscribe']);
  assert.deepEqual(filterLinks(links, ['rt=core.s']).map((l) => l.href), ['/api/realtime/subscribe']);
  assert.deepEqual(filterLinks(links, ['href=/api/*']).map((l) => l.href), ['/api/realtime/subscribe']);
  assert.deepEqual(filterLinks(links, ['ct=50']).map((l) => l.href), ['/api']);
  assert.deepEqual(filterLinks(links, ['rt=nothing']), []);
  assert.equal(filterLinks(links, []).length, 2);
});
