'use strict';
// Baseline (b): node-coap's server (npm `coap`), answering every request at
// once with the same payload as the limit.
const coap = require('coap');
const { serve } = require('../lib/procs');
const { NOW_PAYLOAD } = require('./payload');

let answered = 0;
const server = coap.createServer({ type: 'udp4' }, (request, response) => {
  answered++;
  response.setOption('Content-Format', 'application/cbor');
  response.end(NOW_PAYLOAD);
});
server.listen(0, '127.0.0.1', () => {
  serve({ stats: () => ({ answered, memory: process.memoryUsage() }) }, { port: server._sock.address().port });
});
