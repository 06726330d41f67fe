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
