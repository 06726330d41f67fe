'use strict';
// The benchmark's lossy UDP proxy, as a process of its own (test/support/udpProxy.js): every
// datagram is dropped with probability `dropRate`, each way, independently.
const { serve } = require('./lib/procs');
const { createUdpProxy } = require('../support/udpProxy');

const { targetPort, targetHost = '127.0.0.1', dropRate = 0.1 } = JSON.parse(process.argv[2]);
createUdpProxy({ targetPort, targetHost, dropRate }).then((proxy) => {
  serve({ counts: () => ({ ...proxy.counts, clients: proxy.clients() }) }, { port: proxy.port });
});
