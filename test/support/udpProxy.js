'use strict';
/**
 * A UDP proxy between clients and a server on loopback: clients talk to its front port; each
 * client gets its own upstream socket (so the server still sees one endpoint per client). Every
 * datagram may be dropped with probability `dropRate`, each way, independently; `tap` sees each
 * datagram to the server first, and drops it by returning true. `inject(clientKey, datagram)` sends a datagram to the
 * server as that client (replays, forged records). Used in-process by tests and as a child
 * process by the benchmark (test/bench/proxy.js).
 */
const dgram = require('node:dgram');

function createUdpProxy({ targetPort, targetHost = '127.0.0.1', dropRate = 0, tap = () => false }) {
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
    if (tap(datagram, `${rinfo.address}|${rinfo.port}`) === true || Math.random() < dropRate) return void counts.droppedToServer++;
    counts.toServer++;
    upstream.send(datagram, targetPort, targetHost);
  });

  return new Promise((resolve) => front.bind(0, '127.0.0.1', () => resolve({
    port: front.address().port,
    counts,
    clients: () => upstreams.size,
    inject(clientKey, datagram) {
      upstreams.get(clientKey)?.send(datagram, targetPort, targetHost);
    },
    close() {
      for (const socket of upstreams.values()) socket.close();
      upstreams.clear();
      front.close();
    },
  })));
}

module.exports = { createUdpProxy };
