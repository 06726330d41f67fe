'use strict';

// A Kuzzle 2.56 cluster with the CoAP plugin, in network namespaces (root only).
// Layout and choices: cluster.js. Pieces: netns.js (namespaces, bridge, veth, subnet),
// storage-server.js (memory Elasticsearch over HTTP), node.js (one Kuzzle node: ../child.js in a
// namespace); the shared redis-server comes from ../redis.js.

module.exports = require('./cluster');
