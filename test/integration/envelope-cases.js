'use strict';
/**
 * POST /api/server/now through coap-client, in the three body forms (CBOR full envelope, JSON,
 * compact), against a double of the given form. Used by envelope-seed.test.js and
 * envelope-kuzzle2.test.js (one double per file).
 */
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { bootDouble, coap, logOption, stderrJson } = require('./coap-helpers');
const { decodeWithCbor2 } = require('../support/peers');

function envelopeTests(form) {
  let double;
  let port;
  before(async () => ({ double, port } = await bootDouble({ form })));
  after(() => double?.stop());

  const calls = () => double.calls.get('server:now') ?? 0;

  test(`[${form}] CBOR by default: 2.05, Kuzzle's full envelope, result.now an integer (python3-cbor2)`, async () => {
    const before = calls();
    const started = Date.now();
    const run = await coap(port, '/api/server/now', ['-m', 'post']);
    assert.equal(run.exit, 0, run.stderr);
    assert.equal(run.last.code, '2.05');
    assert.equal(run.last.type, 'ACK', 'piggybacked');
    assert.equal(logOption(run.last, 'Content-Format'), 'application/cbor');
    const { value, types } = decodeWithCbor2(run.payload);
    assert.equal(value.status, 200);
    assert.equal(types.status, 'int');
    assert.equal(value.controller, 'server');
    assert.equal(value.action, 'now');
    assert.equal(value.error, null);
    assert.equal(types.requestId, 'str');
    assert.equal(types.result.now, 'int');
    assert.ok(value.result.now >= started - 1000 && value.result.now <= Date.now() + 1000, String(value.result.now));
    assert.equal(calls(), before + 1);
  });

  test(`[${form}] -A 50: the same envelope in JSON`, async () => {
    const run = await coap(port, '/api/server/now', ['-m', 'post', '-A', '50']);
    assert.equal(run.last.code, '2.05');
    assert.equal(logOption(run.last, 'Content-Format'), 'application/json');
    const body = JSON.parse(run.payload.toString('utf8'));
    assert.equal(body.status, 200);
    assert.equal(body.controller, 'server');
    assert.equal(body.action, 'now');
    assert.equal(body.error, null);
    assert.ok(Number.isInteger(body.result.now));
  });

  test(`[${form}] ?envelope=compact: the result alone`, async () => {
    const run = await coap(port, '/api/server/now?envelope=compact', ['-m', 'post']);
    assert.equal(run.last.code, '2.05');
    const { value, types } = decodeWithCbor2(run.payload);
    assert.deepEqual(Object.keys(value), ['now']);
    assert.equal(types.now, 'int');
    const asJson = await coap(port, '/api/server/now?envelope=compact', ['-m', 'post', '-A', '50']);
    assert.deepEqual(Object.keys(JSON.parse(asJson.payload.toString('utf8'))), ['now']);
  });

  test(`[${form}] a Kuzzle error (document:get) is 4.04 with its id, in both envelopes`, async () => {
    const full = await coap(port, '/api/document/get?index=i&collection=c&_id=missing', ['-m', 'post', '-A', '50']);
    assert.equal(full.last.code, '4.04');
    const body = stderrJson(full.stderr);
    assert.equal(body.status, 404);
    assert.equal(body.error.id, 'services.storage.not_found');
    assert.match(body.error.message, /"missing"/);
    const compact = await coap(port, '/api/document/get?_id=missing&envelope=compact', ['-m', 'post', '-A', '50']);
    assert.equal(compact.last.code, '4.04');
    const error = stderrJson(compact.stderr);
    assert.equal(error.status, 404);
    assert.equal(error.id, 'services.storage.not_found');
  });
}

module.exports = { envelopeTests };
