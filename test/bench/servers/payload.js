'use strict';
// The answer every baseline server sends: the CBOR of a Kuzzle `server:now`
// response envelope, as the plugin encodes it, so that all servers under test
// put the same bytes on the wire.
const { randomUUID } = require('node:crypto');
const { encodePayload } = require('../../../dist/codec/contentFormat');

const CBOR = 60;

/** A response shaped as Kuzzle's `response.toJSON()` for server:now. */
function nowResponse(requestId = randomUUID()) {
  const content = {
    action: 'now', collection: null, controller: 'server', deprecations: undefined, error: null, headers: {},
    index: null, node: 'bench', requestId, result: { now: Date.now() }, status: 200, volatile: null,
  };
  return { raw: false, status: 200, requestId, content, headers: {} };
}

const NOW_PAYLOAD = encodePayload(CBOR, nowResponse('00000000-0000-4000-8000-000000000000').content);

module.exports = { CBOR, nowResponse, NOW_PAYLOAD };
