'use strict';
// Device credentials from a file (src/kuzzle/credentialFile.ts): validation with the entry at
// fault, PSK as text or hex, certificate subjects, reload on change with the revoked credentials
// reported, an invalid new file leaving the previous credentials in force.
const { test, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { CredentialFile, parseCredentials } = require('../../dist/kuzzle/credentialFile');
const { Credentials } = require('../../dist/kuzzle/credentials');

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'coap-credentials-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));
const quiet = { info: () => {}, error: () => {} };

test('a valid file: PSK as text or hex, certificate subjects; lookups by kind', () => {
  const credentials = parseCredentials(JSON.stringify({
    devices: [
      { identity: 'sensor-1', psk: 'secret-1', apiKey: 'key-1' },
      { identity: 'sensor-2', pskHex: '00ff10', apiKey: 'key-2' },
      { subject: 'CN=sensor-3,O=Acme', apiKey: 'key-3' },
    ],
  }), 'f.json');
  assert.deepEqual(credentials.get('psk:sensor-1'), { kind: 'psk', identity: 'sensor-1', psk: Buffer.from('secret-1'), apiKey: 'key-1' });
  assert.deepEqual(credentials.get('psk:sensor-2').psk, Buffer.from([0, 255, 16]));
  assert.equal(credentials.get('certificate:CN=sensor-3,O=Acme').apiKey, 'key-3');
  assert.equal(credentials.size, 3);
});

test('invalid files are refused with the entry at fault', () => {
  const cases = [
    ['{', /not JSON/],
    ['[]', /expected \{ "devices"/],
    [{ devices: [{ identity: 'a', psk: 'k' }] }, /devices\[0\]\.apiKey/],
    [{ devices: [{ identity: '', psk: 'k', apiKey: 'x' }] }, /devices\[0\]\.identity/],
    [{ devices: [{ identity: 'a', apiKey: 'x' }] }, /devices\[0\] needs one of "psk"/],
    [{ devices: [{ identity: 'a', pskHex: 'xyz', apiKey: 'x' }] }, /needs one of "psk"/],
    [{ devices: [{ identity: 'a', psk: 'k', pskHex: '00', apiKey: 'x' }] }, /needs one of/],
    [{ devices: [{ identity: 'a', psk: 'k'.repeat(65), apiKey: 'x' }] }, /1 to 64 bytes/],
    [{ devices: [{ identity: 'a', psk: 'k', apiKey: 'x' }, { identity: 'a', psk: 'j', apiKey: 'y' }] }, /devices\[1\]: psk "a" appears twice/],
    [{ devices: [{ subject: 'CN=x', psk: 'k', apiKey: 'x' }] }, /takes no identity or psk/],
  ];
  for (const [given, message] of cases) {
    assert.throws(() => parseCredentials(typeof given === 'string' ? given : JSON.stringify(given), 'creds.json'),
      (error) => /device credentials file creds\.json/.test(error.message) && message.test(error.message), JSON.stringify(given));
  }
});

test('a missing file fails at once, with its path', () => {
  assert.throws(() => new CredentialFile(path.join(dir, 'none.json'), () => {}, quiet), /none\.json: cannot be read/);
});

test('reload: removed and changed credentials are revoked; an invalid file keeps the previous ones', () => {
  const file = path.join(dir, 'reload.json');
  const write = (devices) => fs.writeFileSync(file, JSON.stringify({ devices }));
  write([
    { identity: 'keep', psk: 'k', apiKey: 'a' },
    { identity: 'gone', psk: 'k', apiKey: 'a' },
    { identity: 'rekeyed', psk: 'k', apiKey: 'a' },
    { identity: 'newtoken', psk: 'k', apiKey: 'a' },
  ]);
  const revoked = [];
  const errors = [];
  const store = new CredentialFile(file, (gone) => revoked.push(...gone.map((c) => c.identity)), { info: () => {}, error: (m) => errors.push(m) });
  const credentials = new Credentials([store]);
  assert.deepEqual(credentials.pskOf('gone'), Buffer.from('k'));
  write([
    { identity: 'keep', psk: 'k', apiKey: 'a' },
    { identity: 'rekeyed', psk: 'other', apiKey: 'a' },
    { identity: 'newtoken', psk: 'k', apiKey: 'b' },
    { identity: 'added', psk: 'k', apiKey: 'c' },
  ]);
  store.reload();
  assert.deepEqual(revoked.sort(), ['gone', 'newtoken', 'rekeyed']);
  assert.equal(credentials.pskOf('gone'), null);
  assert.deepEqual(credentials.pskOf('rekeyed'), Buffer.from('other'));
  assert.equal(credentials.tokenOf({ kind: 'psk', identity: 'added' }), 'c');
  assert.equal(credentials.tokenOf({ kind: 'certificate', identity: 'added' }), null, 'kinds do not mix');
  fs.writeFileSync(file, '{"devices": [ {');
  store.reload();
  assert.equal(errors.length, 1);
  assert.match(errors[0], /not JSON.*previous credentials stay in force/);
  assert.equal(credentials.tokenOf({ kind: 'psk', identity: 'added' }), 'c');
  store.close();
});

/**
 * A credentials file naming 'a' is replaced by one naming 'b' (write and rename, as editors and
 * config tools do), with the store's watch started before the replacement or after it: 'a' must be
 * revoked and 'b' known within a few seconds.
 */
async function replacedWhileWatched(name, watchBeforeReplacing) {
  const file = path.join(dir, name);
  fs.writeFileSync(file, JSON.stringify({ devices: [{ identity: 'a', psk: 'k', apiKey: 'x' }] }));
  const revoked = [];
  const store = new CredentialFile(file, (gone) => revoked.push(...gone.map((c) => c.identity)), quiet);
  try {
    if (watchBeforeReplacing) store.watch();
    const next = `${file}.new`;
    fs.writeFileSync(next, JSON.stringify({ devices: [{ identity: 'b', psk: 'k', apiKey: 'x' }] }));
    fs.renameSync(next, file);
    if (!watchBeforeReplacing) store.watch(); // its first look sees the new file already
    const deadline = Date.now() + 5000;
    while (revoked.length === 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100));
    assert.deepEqual(revoked, ['a']);
    assert.ok(store.get('psk', 'b'));
  } finally {
    store.close();
  }
}

test('watch: a file replaced between its read and the start of the watch is reloaded too (the watch compares with what was read)', () => replacedWhileWatched('early.json', false));

test('watch: a file replaced on disk is reloaded within a few seconds', () => replacedWhileWatched('watch.json', true));
