'use strict';
// POST /api/server/now with the seed's protocol contract: execute(request, cb), context.Request.
require('./envelope-cases').envelopeTests('seed');
