'use strict';
/**
 * Kuzzle's coap connections on the nodes of a test cluster (test/kuzzle-host/cluster): which node
 * a device reached, and each node's share of many devices, as Kuzzle's own connection list and
 * `server:metrics` show them. Shared by the cluster tests (nginx, DNAT, failover).
 */
const assert = require('node:assert/strict');
const { kuzzleHttp } = require('./helpers');

/** Ids of Kuzzle's coap connections on a node (none for a node that is not running). */
async function connectionIds(node) {
  return node.isRunning() ? new Set((await node.connections('coap')).map((conn) => conn.id)) : new Set();
}

/** Kuzzle's coap connections of `node` ({id, protocol, ips}) whose id is not in `known`. */
async function freshConnections(node, known) {
  return (await node.connections('coap')).filter((conn) => !known.has(conn.id));
}

/** Kuzzle's count of coap connections on a node (server:metrics, network.connections.coap). */
async function coapMetric(node) {
  const metrics = await kuzzleHttp(node).ok({ controller: 'server', action: 'metrics' });
  return metrics.network.connections.coap ?? 0;
}

/** Runs `act()`; resolves {node, result}: the index of the one node that got one new coap connection meanwhile (asserted). */
async function nodeReached(nodes, act) {
  const known = await Promise.all(nodes.map(connectionIds));
  const result = await act();
  const grown = (await Promise.all(nodes.map(connectionIds))).map((ids, i) => [...ids].filter((id) => !known[i].has(id)).length);
  assert.equal(grown.reduce((x, y) => x + y, 0), 1, `one new coap connection: ${grown}`);
  return { node: grown.indexOf(1), result };
}

/** Each node's coap connection ids and server:metrics count, for sharesSince(). */
async function connectionSnapshot(nodes) {
  return { ids: await Promise.all(nodes.map(connectionIds)), counts: await Promise.all(nodes.map(coapMetric)) };
}

/**
 * Each node's share of the connections made since `before` (connectionSnapshot): its new
 * connections, which its server:metrics must count, less the connections of earlier tests that
 * ended meanwhile (an idle endpoint expires). Resolves {shares, counts}: counts is server:metrics now.
 */
async function sharesSince(nodes, before) {
  const after = await connectionSnapshot(nodes);
  const shares = after.ids.map((ids, i) => [...ids].filter((id) => !before.ids[i].has(id)).length);
  const ended = before.ids.map((ids, i) => [...ids].filter((id) => !after.ids[i].has(id)).length);
  for (const [i, share] of shares.entries()) {
    assert.equal(after.counts[i] - before.counts[i], share - ended[i], `node ${i}: server:metrics counts its share`);
  }
  return { shares, counts: after.counts };
}

module.exports = { connectionIds, freshConnections, coapMetric, nodeReached, connectionSnapshot, sharesSince };
