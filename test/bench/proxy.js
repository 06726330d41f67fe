'use strict';
// A lossy UDP proxy: clients talk to its front port; each client gets its own
// upstream socket (so the server still sees one endpoint per client); every
// datagram is dropped with probability `dropRate`, each way, independently.
const dgram = require('node:dgram');
const { serve } = require('./lib/procs');

const { targetPort, targetHost = '127.0.0.1', dropRate = 0.1 } = JSON.parse(process.argv[2]);
const counts = { toServer: 0, droppedToServer: 0, toClient: 0, droppedToClient: 0 };
const upstreams = new Map(); // "address|port" of a client -> its upstream socket
const front = dgram.createSocket('udp4');

function upstreamOf(rinfo) {
  const key = `${rinfo.address}|${rinfo.port}`;
  let socket = upstreams.get(key);
  if (socket === undefined) {
    socket = dgram.createSocket('udp4');
    socket.on('message', (datagram) => {
      if (Math.random() < dropRate) return void counts.droppedToClient++;
      counts.toClient++;
      front.send(datagram, rinfo.port, rinfo.address);
    });
    socket.bind(0, '127.0.0.1');
    upstreams.set(key, socket);
  }
  return socket;
}

front.on('message', (datagram, rinfo) => {
  const upstream = upstreamOf(rinfo);
  if (Math.random() < dropRate) return void counts.droppedToServer++;
  counts.toServer++;
  upstream.send(datagram, targetPort, targetHost);
});
front.bind(0, '127.0.0.1', () => {
  serve({ counts: () => ({ ...counts, clients: upstreams.size }) }, { port: front.address().port });
});
