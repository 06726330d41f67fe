'use strict';
// Which datagram sources the transport refuses to answer (issue 9, item 1).
const { test } = require('node:test');
const assert = require('node:assert/strict');
const { unanswerableSource } = require('../../dist/coap/sourceAddress');

test('port 0, unspecified, multicast, reserved and broadcast sources are refused, with the reason', () => {
  const refused = [
    ['127.0.0.1', 0], ['0.0.0.0', 5683], ['0.1.2.3', 5683], ['224.0.0.1', 5683], ['239.255.255.250', 1900],
    ['240.0.0.1', 5683], ['255.255.255.255', 5683], ['::', 5683], ['ff02::fd', 5683], ['FF05::FD', 5683],
    ['::ffff:0.0.0.0', 5683], ['::ffff:224.0.1.187', 5683], ['::1', 0],
  ];
  for (const [address, port] of refused) {
    const why = unanswerableSource(address, port);
    assert.ok(why !== null && why.includes(port === 0 ? 'port 0' : address), `${address}:${port} refused, got ${why}`);
  }
});

test('ordinary unicast sources are answered', () => {
  const answered = [['127.0.0.1', 1], ['10.1.2.3', 5683], ['223.255.255.255', 65535], ['::1', 5683], ['fe80::1%lo', 5683], ['::ffff:192.0.2.1', 40000], ['2001:db8::1', 5683]];
  for (const [address, port] of answered) assert.equal(unanswerableSource(address, port), null, `${address}:${port}`);
});
