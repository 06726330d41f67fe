'use strict';
// Baseline (a), "the limit": a bare dgram socket that parses every request
// with coap-packet and answers it at once (piggybacked on the ACK for a CON)
// with a generated 2.05. No deduplication, no state: the floor of any
// Node.js CoAP server on this machine.
const dgram = require('node:dgram');
const packet = require('coap-packet');
const { serve } = require('../lib/procs');
const { NOW_PAYLOAD } = require('./payload');

const CONTENT_FORMAT = [{ name: 'Content-Format', value: Buffer.from([60]) }];
const socket = dgram.createSocket('udp4');
let answered = 0;
socket.on('message', (datagram, rinfo) => {
  let request;
  try {
    request = packet.parse(datagram);
  } catch {
    return;
  }
  if (request.ack || request.reset) return;
  const answer = packet.generate({
    messageId: request.confirmable ? request.messageId : (request.messageId + 1) & 0xffff,
    token: request.token,
    code: '2.05',
    ack: request.confirmable,
    confirmable: false,
    options: CONTENT_FORMAT,
    payload: NOW_PAYLOAD,
  });
  answered++;
  socket.send(answer, rinfo.port, rinfo.address);
});
socket.bind(0, '127.0.0.1', () => {
  serve({ stats: () => ({ answered, memory: process.memoryUsage() }) }, { port: socket.address().port });
});
