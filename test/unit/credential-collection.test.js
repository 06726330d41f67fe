'use strict';
// Device credentials read from a Kuzzle collection (src/kuzzle/credentialCollection.ts), with a
// stand-in for the request execution that answers document:get and document:mGet from a Map:
// fetched once, unknown identities remembered apart (a flood of them never evicts a device's
// credential), a deleted or changed credential revoked at the next refresh.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const { CredentialCollection } = require('../../dist/kuzzle/credentialCollection');

function collection({ cacheSize = 3 } = {}) {
  const documents = new Map();
  const reads = [];
  const revoked = [];
  const execute = (data, _connection, callback) => {
    reads.push(data.action);
    if (data.action === 'get') {
      const source = documents.get(data._id);
      callback(source ? { status: 200, content: { result: { _id: data._id, _source: source } } } : { status: 404, content: { error: { id: 'not_found' } } });
    } else {
      const successes = data.body.ids.filter((id) => documents.has(id)).map((id) => ({ _id: id, _source: documents.get(id) }));
      callback({ status: 200, content: { result: { successes, errors: [] } } });
    }
  };
  const store = new CredentialCollection(
    { index: 'devices', collection: 'credentials', apiKey: 'service-key', apiKeyFile: null, cacheSize, cacheTtlMs: 60000 },
    execute, { id: 'service' }, (gone) => revoked.push(...gone.map((c) => c.identity)), { info: () => {}, error: () => {} },
  );
  return { store, documents, reads, revoked };
}

test('a credential is fetched once, then served from memory; an unknown identity is remembered as unknown', async () => {
  const { store, documents, reads } = collection();
  documents.set('psk:sensor-1', { identity: 'sensor-1', psk: 'k', apiKey: 'api-1' });
  assert.equal(store.get('psk', 'sensor-1'), undefined, 'not in memory before a fetch');
  await Promise.all([store.fetch('psk', 'sensor-1'), store.fetch('psk', 'sensor-1')]);
  assert.equal(store.get('psk', 'sensor-1').apiKey, 'api-1');
  await store.fetch('psk', 'nobody');
  assert.equal(store.get('psk', 'nobody'), null);
  assert.deepEqual(reads, ['get', 'get'], 'concurrent fetches of one identity share one read');
});

test('a flood of unknown identities evicts its own entries, never a device\'s credential', async () => {
  const { store, documents } = collection({ cacheSize: 3 });
  documents.set('psk:sensor-1', { identity: 'sensor-1', psk: 'k', apiKey: 'api-1' });
  await store.fetch('psk', 'sensor-1');
  for (let i = 0; i < 100; i++) await store.fetch('psk', `made-up-${i}`);
  assert.equal(store.get('psk', 'sensor-1').apiKey, 'api-1');
  assert.equal(store.stats.unknown, 3, 'unknown identities stay within cacheSize');
  assert.equal(store.get('psk', 'made-up-99'), null);
  assert.equal(store.get('psk', 'made-up-0'), undefined, 'the oldest unknown ones went');
});

test('refresh: deleted and changed credentials are revoked, unchanged ones kept', async () => {
  const { store, documents, revoked } = collection();
  for (const id of ['a', 'b', 'c']) documents.set(`psk:${id}`, { identity: id, psk: 'k', apiKey: `api-${id}` });
  for (const id of ['a', 'b', 'c']) await store.fetch('psk', id);
  documents.delete('psk:a');
  documents.set('psk:b', { identity: 'b', psk: 'other', apiKey: 'api-b' });
  await store.refresh();
  assert.deepEqual(revoked.sort(), ['a', 'b']);
  assert.equal(store.get('psk', 'a'), null);
  assert.deepEqual(store.get('psk', 'b').psk, Buffer.from('other'));
  assert.equal(store.get('psk', 'c').apiKey, 'api-c');
});
