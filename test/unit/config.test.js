'use strict';
const { test } = require('node:test');
const assert = require('node:assert/strict');
const { resolveConfig, DEFAULT_CONFIG, parseSize, ConfigError } = require('../../dist/config');

test('no configuration gives the documented defaults', () => {
  const config = resolveConfig(undefined);
  assert.deepEqual(config, { ...DEFAULT_CONFIG });
  assert.equal(config.port, 5683);
  assert.equal(config.blockSize, 1024);
  assert.ok(config.piggybackWindowMs < 2000, 'the empty ACK must leave before the client retransmits');
});

test('values from environment overrides arrive as strings and are accepted', () => {
  const config = resolveConfig({ port: '5684', maxRequestSize: '2mb', deduplication: { maxEntries: '10', maxBytes: '64kb' } });
  assert.equal(config.port, 5684);
  assert.equal(config.maxRequestSize, 2 * 1024 * 1024);
  assert.equal(config.deduplication.maxEntries, 10);
  assert.equal(config.deduplication.maxBytes, 65536);
  assert.equal(config.deduplication.lifetimeMs, DEFAULT_CONFIG.deduplication.lifetimeMs);
});

test('invalid options are refused with the option path in the message', () => {
  const cases = [
    [{ port: 'abc' }, /server\.protocols\.coap\.port must be an integer from 0 to 65535/],
    [{ port: 70000 }, /port/],
    [{ blockSize: 100 }, /blockSize must be a power of two/],
    [{ envelope: 'tiny' }, /envelope must be one of "full", "compact"/],
    [{ amplification: { echoScope: 'port' } }, /amplification.echoScope must be one of "address", "endpoint"/],
    [{ colour: 'red' }, /server\.protocols\.coap\.colour is not an option/],
    [{ retransmission: { maxRetransmit: -1 } }, /retransmission\.maxRetransmit/],
    [{ deduplication: { maxBytes: 'lots' } }, /deduplication\.maxBytes must be a size/],
    [{ piggybackWindowMs: 2500 }, /piggybackWindowMs/],
    ['5683', /must be an object/],
  ];
  for (const [given, message] of cases) {
    assert.throws(() => resolveConfig(given), (error) => error instanceof ConfigError && message.test(error.message), JSON.stringify(given));
  }
});

test('parseSize reads bytes, kb, mb, gb in any case', () => {
  assert.equal(parseSize(10), 10);
  assert.equal(parseSize('1MB'), 1048576);
  assert.equal(parseSize('512kb'), 524288);
  assert.equal(parseSize('1.5kb'), 1536);
  assert.ok(Number.isNaN(parseSize('ten')));
  assert.ok(Number.isNaN(parseSize(null)));
});

test('coaps: off by default; on, it needs credentials, and its options are checked together', () => {
  assert.equal(resolveConfig(undefined).coaps.enabled, false);
  assert.equal(resolveConfig(undefined).coaps.port, 5684);
  const ok = resolveConfig({ plain: false, coaps: { enabled: true, credentials: { file: '/etc/kuzzle/devices.json' } } });
  assert.equal(ok.plain, false);
  assert.equal(ok.coaps.credentials.file, '/etc/kuzzle/devices.json');
  assert.equal(ok.coaps.credentials.cacheTtlMs, DEFAULT_CONFIG.coaps.credentials.cacheTtlMs);
  const inKuzzle = resolveConfig({ coaps: { enabled: true, credentials: { index: 'devices', collection: 'credentials', apiKeyFile: '/run/secrets/coap' } } });
  assert.equal(inKuzzle.coaps.credentials.apiKeyFile, '/run/secrets/coap');
  const file = { file: 'devices.json' };
  const cases = [
    [{ plain: false }, /plain is false and server\.protocols\.coap\.coaps\.enabled too: nothing would listen/],
    [{ coaps: { enabled: true } }, /coaps\.credentials needs a file or a Kuzzle collection/],
    [{ coaps: { enabled: true, credentials: { index: 'devices' } } }, /credentials\.index, \.collection and \.apiKey \(or \.apiKeyFile\) go together/],
    [{ coaps: { enabled: true, credentials: { index: 'i', collection: 'c', apiKey: 'k', apiKeyFile: 'f' } } }, /give apiKey or apiKeyFile, not both/],
    [{ coaps: { enabled: true, credentials: file, certificate: 'server.crt' } }, /coaps\.certificate and server\.protocols\.coap\.coaps\.privateKey go together/],
    [{ coaps: { enabled: true, credentials: file, verifyClient: 'require' } }, /verifyClient needs server\.protocols\.coap\.coaps\.ca/],
    [{ coaps: { enabled: true, credentials: file, verifyClient: 'always' } }, /verifyClient must be one of "none", "optional", "require"/],
    [{ coaps: { enabled: true, credentials: file, mtu: 100 } }, /coaps\.mtu must be an integer from 256/],
    [{ coaps: { enabled: true, credentials: file, port: 5683 } }, /coaps\.port is the plain CoAP port/],
    [{ coaps: { enabled: true, credentials: { file: '' } } }, /credentials\.file must be a non-empty string/],
    [{ coaps: { colour: 'red' } }, /coaps\.colour is not an option/],
  ];
  for (const [given, message] of cases) {
    assert.throws(() => resolveConfig(given), (error) => error instanceof ConfigError && message.test(error.message), JSON.stringify(given));
  }
});

test('coaps: every CoAP message fits one DTLS record of the MTU; block-wise carries the rest', () => {
  const { secureBlockSize } = require('../../dist/kuzzle/secureSocket');
  assert.equal(secureBlockSize(1232, 32, 1024), 1024, 'the default MTU keeps 1 KiB blocks');
  assert.equal(secureBlockSize(1152, 32, 1024), 512);
  assert.equal(secureBlockSize(576, 8, 1024), 256);
  assert.equal(secureBlockSize(256, 32, 1024), 64);
  assert.equal(secureBlockSize(150, 32, 1024), 16, 'never below the smallest block');
  assert.equal(secureBlockSize(1500, 8, 256), 256, 'never above the configured block size');
});
