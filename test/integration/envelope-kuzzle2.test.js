'use strict';
// POST /api/server/now with Kuzzle 2.56's contract: execute(connection, request, cb), no context.Request.
require('./envelope-cases').envelopeTests('kuzzle2');
