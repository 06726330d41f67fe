'use strict';
// The bench's output: tables, target lines (PASS/FAIL), the ratio lines, and
// the JSON file with the same figures.
const { ratio } = require('./util');

const fmt = (v, digits = 0) => (v === null || v === undefined ? 'n/a' : typeof v === 'number' ? v.toFixed(digits) : String(v));
const fixed2 = (v) => (v === null || v === undefined ? 'n/a' : v.toFixed(2));

function table(title, header, rows) {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => String(r[i]).length)));
  const line = (cells) => cells.map((c, i) => (i === 0 ? String(c).padEnd(widths[i]) : String(c).padStart(widths[i]))).join('  ');
  return [`\n${title}`, line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

/** Every derived figure and target, from the raw scenario results. */
function evaluate(results) {
  const t = results.throughput;
  const by = (id) => t?.targets.find((x) => x.id === id) ?? null;
  const limit = by('limit');
  const plugin = by('plugin');
  const nodeCoap = by('node-coap');
  const kc = (action) => by(`kuzzle-coap-${action}`);
  const kh = (action) => by(`kuzzle-http-${action}`);
  const ratios = {
    'plugin/limit': ratio(plugin?.rps, limit?.rps),
    'plugin/node-coap': ratio(plugin?.rps, nodeCoap?.rps),
    'coap/http server:now': ratio(kc('now')?.rps, kh('now')?.rps),
    'coap/http document:create': ratio(kc('create')?.rps, kh('create')?.rps),
    'coaps/coap': ratio(results.dtls?.coaps.rps, results.dtls?.plain.rps),
    'cluster fan-out spread/single': ratio(results.cluster?.fanout.spread.lastMs, results.cluster?.fanout.single.lastMs),
    'cluster req/s 3 nodes/1 node': ratio(clusterTarget(results, 3)?.rps, clusterTarget(results, 1)?.rps),
  };
  const p99Ratio = ratio(plugin?.p99, limit?.p99);
  // Information, not a target: the same comparisons in server CPU time per request (limit µs / plugin µs).
  const cpuEfficiency = {
    'plugin/limit': ratio(limit?.cpuUsPerRequest, plugin?.cpuUsPerRequest),
    'plugin/node-coap': ratio(nodeCoap?.cpuUsPerRequest, plugin?.cpuUsPerRequest),
  };
  const m = results.memory;
  const f = results.fanout;
  const l = results.loss;
  const z = results.fuzz;
  const fl = results.flood;
  const d = results.dtls;
  const cf = results.cluster?.fanout;
  const check = (name, value, ok, detail) => ({ name, value, pass: value === null || value === undefined ? null : ok, detail });
  const targets = [
    check("plugin's own cost ≥ 0.6× the limit's throughput", ratios['plugin/limit'], ratios['plugin/limit'] >= 0.6, `${fixed2(ratios['plugin/limit'])}×`),
    check("plugin's own cost ≥ 2× node-coap's throughput", ratios['plugin/node-coap'], ratios['plugin/node-coap'] >= 2, `${fixed2(ratios['plugin/node-coap'])}×`),
    check("plugin's p99 ≤ 2× the limit's p99", p99Ratio, p99Ratio <= 2, `${fixed2(p99Ratio)}× (${fmt(plugin?.p99, 2)} ms vs ${fmt(limit?.p99, 2)} ms)`),
    check('inside Kuzzle, CoAP ≥ HTTP req/s for server:now', ratios['coap/http server:now'], ratios['coap/http server:now'] >= 1, `${fixed2(ratios['coap/http server:now'])}×`),
    check('inside Kuzzle, CoAP ≥ HTTP req/s for document:create', ratios['coap/http document:create'], ratios['coap/http document:create'] >= 1, `${fixed2(ratios['coap/http document:create'])}×`),
    check('≤ 1 KB heap per idle endpoint', m?.idleEndpoints.heapPerEndpoint, m?.idleEndpoints.heapPerEndpoint <= 1024, `${fmt(m?.idleEndpoints.heapPerEndpoint)} B`),
    check('≤ 1.5 KB heap per observe relation', m?.relations.heapPerRelation, m?.relations.heapPerRelation <= 1536, `${fmt(m?.relations.heapPerRelation)} B`),
    check('deduplication store within its configured bound', m?.dedup.withinBound, m?.dedup.withinBound === true,
      m ? `${m.dedup.entries}/${m.dedup.bound.maxEntries} entries, ${m.dedup.bytes}/${m.dedup.bound.maxBytes} B accounted` : ''),
    check("deduplication store's real memory within its byte bound", m?.dedup.realBytes, m?.dedup.realWithinByteBound === true,
      m ? `${m.dedup.realBytes} B heap+buffers for ${m.dedup.entries} entries vs ${m.dedup.bound.maxBytes} B` : ''),
    check('fan-out to 10,000 relations: last notification sent within 250 ms', f?.lastSentMs, f?.lastSentMs <= 250 && f?.received >= f?.relations,
      f ? `${fmt(f.lastSentMs, 1)} ms for ${f.relations} relations, ${f.received} received` : ''),
    check('10% loss each way: every CON request executed exactly once', l?.exactlyOnce, l?.exactlyOnce === true,
      l ? `once ${l.executions.once}/${l.requests}, twice+ ${l.executions.duplicated}, never ${l.executions.missing}; answered ${l.answered}, gave up ${l.gaveUp} (RFC odds ${l.expectedGaveUp})` : ''),
    check('fuzz: no fault, still serving after the mutated datagrams', z?.faults, z?.faults === 0 && z?.answeredAfter === true,
      z ? `${z.read}/${z.datagrams} read, ${z.faults} faults, answered after: ${z.answeredAfter}` : ''),
    check("flood: a verified device's retransmitted CON gets its cached answer and runs once", fl?.executedOnce, fl?.cachedAnswer === true && fl?.executedOnce === true,
      fl ? `${fl.endpoints} spoofed endpoints; cached answer ${fl.cachedAnswer}, executed once ${fl.executedOnce}` : ''),
    check('flood: a new device is served', fl?.newDeviceServed, fl?.newDeviceServed === true, fl ? `${fl.newDeviceServed}` : ''),
    check('flood: bytes out ≤ 3 × bytes in to every unverified spoofed peer', fl?.maxAmplification, fl?.maxAmplification <= 3, fl ? `largest ${fl.maxAmplification.toFixed(2)}` : ''),
    check('flood: connections and deduplication within their configured bounds', fl?.connections, fl && fl.connections <= fl.bounds.maxConnections
      && fl.dedup.entries <= fl.bounds.deduplication.maxEntries && fl.dedup.bytes <= fl.bounds.deduplication.maxBytes,
      fl ? `${fl.connections}/${fl.bounds.maxConnections} connections, dedup ${fl.dedup.entries}/${fl.bounds.deduplication.maxEntries} entries, ${fl.dedup.bytes}/${fl.bounds.deduplication.maxBytes} B` : ''),
    check('coaps ≥ 0.6× plain CoAP req/s (same load, same plugin process)', ratios['coaps/coap'], ratios['coaps/coap'] >= 0.6,
      d ? `${fixed2(ratios['coaps/coap'])}× (${fmt(d.coaps.rps)} vs ${fmt(d.plain.rps)} req/s)` : ''),
    check('≥ 2,000 DTLS handshakes/s (cookie round, PSK, CCM8; load generator on the same machine)', d?.handshakes.perSecond, d?.handshakes.perSecond >= 2000,
      d ? `${fmt(d.handshakes.perSecond)}/s, ${d.handshakes.concurrency} in parallel, ${d.handshakes.failed} failed` : ''),
    check('≤ 40 KB heap + native memory (RSS) per idle DTLS session', d?.memory.rssPerSession, d?.memory.rssPerSession <= 40 * 1024,
      d ? `${fmt(d.memory.rssPerSession)} B RSS each at ${d.memory.sessions} sessions (heap ${fmt(d.memory.heapPerSession)} B, external ${fmt(d.memory.externalPerSession)} B)` : ''),
    check('cluster fan-out: every relation notified, the last within 500 ms of the write on node B, all on node A and spread over the 3 nodes',
      cf ? Math.max(cf.single.lastMs, cf.spread.lastMs) : null,
      Math.max(cf?.single.lastMs, cf?.spread.lastMs) <= 500 && cf?.single.received >= cf?.single.relations && cf?.spread.received >= cf?.spread.relations,
      cf ? `all on A ${fmt(cf.single.lastMs, 1)} ms, spread ${fmt(cf.spread.lastMs, 1)} ms (${fixed2(ratios['cluster fan-out spread/single'])}×) for ${cf.single.relations} relations; received ${cf.single.received} and ${cf.spread.received}` : ''),
    check('cluster req/s through nginx: 3 nodes ≥ 0.9× 1 node (2 cores: it does not fall)', ratios['cluster req/s 3 nodes/1 node'], ratios['cluster req/s 3 nodes/1 node'] >= 0.9,
      results.cluster ? `${fixed2(ratios['cluster req/s 3 nodes/1 node'])}× (${fmt(clusterTarget(results, 3)?.rps)} vs ${fmt(clusterTarget(results, 1)?.rps)} req/s)` : ''),
  ];
  return { ratios, p99Ratio, cpuEfficiency, targets };
}

/** The cluster scenario's req/s figures through nginx to `nodes` nodes (1 or 3). */
const clusterTarget = (results, nodes) => results.cluster?.throughput.find((x) => x.id === (nodes === 1 ? 'nginx-1-node' : 'nginx-3-nodes')) ?? null;

function render(results, evaluation) {
  const out = [];
  const t = results.throughput;
  if (t) {
    const limit = t.targets.find((x) => x.id === 'limit');
    out.push(table(`1. Throughput and latency: ${t.params.sockets} endpoints × ${t.params.window} CON in flight (HTTP: ${t.params.sockets * t.params.window} concurrent requests; Kuzzle closes each connection after its answer), ${t.params.rounds} rounds × ${t.params.durationMs} ms, medians`,
      ['server', 'req/s', '× limit', 'p50 ms', 'p99 ms', 'p99 × limit', 'server CPU', 'CPU µs/req', 'client CPU', 'lost'],
      t.targets.map((x) => [x.label, fmt(x.rps), fixed2(ratio(x.rps, limit?.rps)), fmt(x.p50, 2), fmt(x.p99, 2), fixed2(ratio(x.p99, limit?.p99)), fixed2(x.serverCpu), fmt(x.cpuUsPerRequest), fixed2(x.clientCpu), fmt(x.lost)])));
    out.push('   server CPU: cores the server process used during the run; CPU µs/req: its CPU time per answered request (steadier than req/s on a shared machine)');
    const plugin = t.targets.find((x) => x.id === 'plugin');
    if (plugin?.rounds.some((r) => r.dedup)) {
      out.push(`   plugin (minimal), round by round: CPU µs/req ${plugin.rounds.map((r) => r.cpuUsPerRequest).join(', ')}; dedup store after each: ${plugin.rounds.map((r) => `${r.dedup?.entries} entries/${Math.round((r.dedup?.bytes ?? 0) / 1048576)} MB, ${r.dedup?.evicted} evicted`).join('; ')}`);
    }
    const pairs = ['now', 'create'].map((action) => [action, t.targets.find((x) => x.id === `kuzzle-coap-${action}`), t.targets.find((x) => x.id === `kuzzle-http-${action}`)]).filter(([, c, h]) => c && h);
    if (pairs.length) {
      out.push(table('   Inside Kuzzle 2.56: CoAP plugin vs Kuzzle HTTP, same concurrency',
        ['action', 'CoAP req/s', 'HTTP req/s', 'CoAP/HTTP', 'CoAP p99 ms', 'HTTP p99 ms'],
        pairs.map(([action, c, h]) => [action === 'now' ? 'server:now' : 'document:create', fmt(c.rps), fmt(h.rps), fixed2(ratio(c.rps, h.rps)), fmt(c.p99, 2), fmt(h.p99, 2)])));
    }
  }
  const m = results.memory;
  if (m) {
    out.push(table('2. Memory (heapUsed after gc(), server process)', ['measure', 'value', 'detail'], [
      ['heap per idle endpoint', `${fmt(m.idleEndpoints.heapPerEndpoint)} B`, `${m.idleEndpoints.endpoints} endpoints, after their dedup entries expired`],
      ['  with its dedup entry', `${fmt(m.idleEndpoints.heapPerEndpointWithDedup)} B`, `right after the request (+${fmt(m.idleEndpoints.arrayBuffersPerEndpoint)} B buffers once expired)`],
      ['heap per observe relation', `${fmt(m.relations.heapPerRelation)} B`, `${m.relations.registered}/${m.relations.requested} relations over ${m.relations.endpoints} endpoints`],
      ['  with its dedup entry', `${fmt(m.relations.heapPerRelationWithDedup)} B`, `right after registration (+${fmt(m.relations.arrayBuffersPerRelation)} B buffers once expired)`],
      ['dedup store entries', `${m.dedup.entries}`, `bound ${m.dedup.bound.maxEntries}; ${m.dedup.evicted} evicted; after ${m.dedup.durationMs} ms at ${m.dedup.rps} req/s`],
      ['dedup store bytes (accounted)', `${m.dedup.bytes}`, `bound ${m.dedup.bound.maxBytes}; ${fmt(m.dedup.accountedBytesPerEntry)} B/entry`],
      ['dedup store bytes (real)', `${m.dedup.realBytes}`, `heap ${m.dedup.realHeapBytes} + buffers ${m.dedup.realBufferBytes}; ~${fmt(m.dedup.realBytesPerEntry)} B/entry`],
    ]));
  }
  if (m) {
    for (const [title, rows] of [['idle endpoint', m.idleEndpoints.byType], ['observe relation', m.relations.byType], ['dedup entry', m.dedup.byType]]) {
      if (!rows) continue;
      out.push(table(`   Heap growth per ${title}, by kind (heap snapshots)`, ['kind', 'B', 'objects'], rows.map((r) => [r.kind, fmt(r.bytesPerUnit, 1), fmt(r.objectsPerUnit, 2)])));
    }
  }
  const f = results.fanout;
  if (f) {
    out.push(table(`3. Fan-out: one broadcast to ${f.relations} observe relations (${f.endpoints} endpoints), median of ${f.runs.length - 1} after a warm-up`, ['measure', 'ms', 'cold (first) ms'], [
      ['broadcast() returned', fmt(f.syncMs, 1), fmt(f.cold.syncMs, 1)],
      ['last notification left the socket', fmt(f.lastSentMs, 1), fmt(f.cold.lastSentMs, 1)],
      ['last notification received', fmt(f.lastReceivedMs, 1), fmt(f.cold.lastReceivedMs, 1)],
      ['notifications received (min)', fmt(f.received), fmt(f.cold.received)],
    ]));
  }
  const l = results.loss;
  if (l) {
    out.push(table(`4. Loss: ${l.requests} CON requests, ${l.dropRate * 100}% dropped each way, ${l.inFlight} in flight, ACK_TIMEOUT ${l.ackTimeoutMs} ms, ${l.where}`, ['measure', 'value'], [
      ['executed exactly once', `${l.executions.once}/${l.requests} (twice+ ${l.executions.duplicated}, never ${l.executions.missing})`],
      ['answered / gave up', `${l.answered} / ${l.gaveUp} (expected from RFC 7252 odds: ${l.expectedGaveUp})`],
      ['retransmissions / empty ACKs / separate', `${l.retransmissions} / ${l.emptyAcks} / ${l.separate}`],
      ['time for all', `${l.elapsedMs} ms (p50 ${fmt(l.latencyMs.p50, 1)} ms, p99 ${fmt(l.latencyMs.p99, 1)} ms, max ${fmt(l.latencyMs.max, 1)} ms)`],
      ['datagrams dropped', `to server ${l.proxy.droppedToServer}/${l.proxy.droppedToServer + l.proxy.toServer}, to client ${l.proxy.droppedToClient}/${l.proxy.droppedToClient + l.proxy.toClient}`],
    ]));
  }
  const z = results.fuzz;
  if (z) {
    out.push(table(`5. Fuzz: ${z.datagrams} mutated datagrams from 64 endpoints (test double behind the plugin)`, ['measure', 'value'], [
      ['read by the plugin', `${z.read} (${z.perSecond}/s), ${z.malformed} malformed`],
      ['faults (handler, receive, tick)', `${z.faults}`],
      ['RSS before / after', `${(z.rssBefore / 1048576).toFixed(1)} / ${(z.rssAfter / 1048576).toFixed(1)} MB`],
      ['a normal request answered after', `${z.answeredAfter}`],
    ]));
  }
  const fl = results.flood;
  if (fl) {
    out.push(table(`6. Flood: ${fl.endpoints} spoofed endpoints in ${fl.seconds.toFixed(1)} s (maxConnections ${fl.bounds.maxConnections}, deduplication ${fl.bounds.deduplication.maxEntries} entries / ${fl.bounds.deduplication.maxBytes} B)`, ['measure', 'value'], [
      ['verified device: retransmission answered from cache, run once', `${fl.cachedAnswer}, ${fl.executedOnce}`],
      ['new device served', `${fl.newDeviceServed}`],
      ['largest bytes out / bytes in to an unverified spoofed peer', fl.maxAmplification.toFixed(2)],
      ['connections (evicted to make room)', `${fl.connections} (${fl.connectionsEvicted})`],
      ['deduplication store', `${fl.dedup.entries} entries (${fl.dedup.unverifiedEntries} unverified), ${fl.dedup.bytes} B`],
      ['heap / buffers growth', `${(fl.heapGrowth / 1048576).toFixed(1)} / ${(fl.buffersGrowth / 1048576).toFixed(1)} MB`],
    ]));
  }
  const h = results.heartbeat;
  if (h) {
    out.push(table(`7. Heartbeat: ${h.relations} quiet observe relations, Max-Age ${h.maxAgeS} s, ${h.seconds.toFixed(1)} s measured`, ['measure', 'value'], [
      ['heartbeats (CON 2.03, each ACKed)', `${h.heartbeats}: ${h.perSecond.toFixed(0)}/s (unpaced: ~${h.expectedPerSecond.toFixed(0)}/s; a device's heartbeats wait behind its CON in flight)`],
      ['server CPU per heartbeat', `${fmt(h.cpuUsPerHeartbeat, 1)} µs (${(h.cpuShare * 100).toFixed(1)}% of a core)`],
      [`at the default Max-Age (${h.atDefault.maxAgeS} s)`, `${h.atDefault.consPerSecond.toFixed(0)} CON/s + as many ACKs (${h.atDefault.datagramsPerSecond.toFixed(0)} datagrams/s), ${(h.atDefault.cpuShare * 100).toFixed(2)}% of a core`],
      ['relations left (none ended)', `${h.relationsLeft} (${h.ended} ended)`],
    ]));
  }
  const d = results.dtls;
  if (d) {
    const row = (label, x) => [label, fmt(x.rps), fmt(x.p50, 2), fmt(x.p99, 2), fixed2(x.serverCpu), fmt(x.cpuUsPerRequest), fixed2(x.clientCpu), fmt(x.lost)];
    out.push(table(`8. coaps (DTLS 1.2, PSK, AES-128-CCM8) vs plain CoAP: one plugin process (minimal entry point) serving both, ${d.params.sockets} endpoints × ${d.params.window} CON in flight, ${d.params.rounds} rounds × ${d.params.durationMs} ms, medians`,
      ['listener', 'req/s', 'p50 ms', 'p99 ms', 'server CPU', 'CPU µs/req', 'client CPU', 'lost'],
      [row('plain CoAP', d.plain), row('coaps', d.coaps), ['coaps / plain', fixed2(ratio(d.coaps.rps, d.plain.rps)), '', '', '', fixed2(ratio(d.coaps.cpuUsPerRequest, d.plain.cpuUsPerRequest)), '', '']]));
    const h = d.handshakes;
    const m = d.memory;
    out.push(table(`   Handshakes and idle sessions (the load generator's DTLS client: test/bench/dtls-client, native)`, ['measure', 'value'], [
      ['full handshakes/s', `${fmt(h.perSecond)} (${h.concurrency} in parallel, each closed with close_notify; ${h.rounds.length} × ${h.durationMs} ms, median)`],
      ['handshake latency p50 / p99', `${fmt(h.p50, 2)} / ${fmt(h.p99, 2)} ms`],
      ['server CPU per handshake', `${fmt(h.cpuUsPerHandshake)} µs (server CPU ${fixed2(h.serverCpu)}, client CPU ${fixed2(h.clientCpu)})`],
      ['cookie rounds / handshakes (server)', `${h.serverCookieRounds} / ${h.serverOk}; failed ${h.failed} (server: ${JSON.stringify(h.serverFailed)})`],
      ['per idle session: RSS', `${fmt(m.rssPerSession)} B (${m.sessions}/${m.requested} sessions, ${m.serverSessions} held by the server)`],
      ['  of which V8 heap / external', `${fmt(m.heapPerSession)} B / ${fmt(m.externalPerSession)} B (OpenSSL's allocations are in neither: RSS only)`],
      ['  after one request each', `${fmt(m.withRequest.rssPerSession)} B RSS, ${fmt(m.withRequest.heapPerSession)} B heap (${m.withRequest.answered} answered, dedup entries expired)`],
      ['establishing them', `${fmt(m.establishMs)} ms (${fmt(m.establishPerSecond)}/s, 500 at a time)`],
    ]));
  }
  const k = results.cluster;
  if (k) {
    const p = results.params;
    const one = clusterTarget(results, 1);
    const three = clusterTarget(results, 3);
    const row = (x) => [x.label, fmt(x.rps), fmt(x.p50, 2), fmt(x.p99, 2), fixed2(x.serverCpu), x.nodeCpu.map(fixed2).join(' / '), fmt(x.cpuUsPerRequest), fixed2(x.nginxCpu), fixed2(x.clientCpu), fmt(x.lost)];
    out.push(table(`9. Kuzzle cluster, 3 nodes (one network namespace each, booted in ${(k.bootMs / 1000).toFixed(1)} s): POST /api/server/now through nginx (UDP), ${p.sockets} endpoints × ${p.window} CON in flight, ${p.rounds} rounds × ${p.durationMs} ms, medians`,
      ['upstream', 'req/s', 'p50 ms', 'p99 ms', 'nodes CPU', 'A / B / C', 'CPU µs/req', 'nginx CPU', 'client CPU', 'lost'],
      [row(one), row(three), ['3 nodes / 1 node', fixed2(ratio(three.rps, one.rps)), '', '', '', '', fixed2(ratio(three.cpuUsPerRequest, one.cpuUsPerRequest)), '', '', '']]));
    out.push('   nodes CPU: cores the three Kuzzle processes used together (A / B / C each); CPU µs/req: theirs per answered request');
    const fanoutRow = (name, f) => [name, `${f.relations}`, f.placement.map((x) => x.relations).join(' / '), fmt(f.lastMs, 1), f.lastByNode.map((ms) => fmt(ms, 1)).join(' / '), fmt(f.firstMs, 1), fmt(f.answeredMs, 1), fmt(f.cold.lastMs, 1), fmt(f.received), f.rssMb.join(' / ')];
    out.push(table(`   Fan-out across nodes: one document written over HTTP on node B, observe relations on A / B / C (devices reach the nodes directly), median of ${p.clusterWrites} writes after a warm-up`,
      ['relations', 'count', 'on A / B / C', 'last ms', 'last of A / B / C', 'first ms', 'HTTP answer ms', 'warm-up last ms', 'received (min)', 'RSS MB A / B / C'],
      [['none', '', '', '', '', '', '', '', '', k.idleRssMb.join(' / ')], fanoutRow('all on node A', k.fanout.single), fanoutRow('spread', k.fanout.spread),
        ['spread / all on A', '', '', fixed2(ratio(k.fanout.spread.lastMs, k.fanout.single.lastMs)), '', '', '', '', '', '']]));
    out.push('   RSS: Kuzzle and its ID card renewer, per node, with the relations registered (before them: "none"; spread is measured after the single case\'s relations were deregistered)');
  }
  if (evaluation.cpuEfficiency['plugin/limit'] !== null) {
    out.push(`\nBy server CPU time per request (information): plugin/limit ${fixed2(evaluation.cpuEfficiency['plugin/limit'])}, plugin/node-coap ${fixed2(evaluation.cpuEfficiency['plugin/node-coap'])}`);
  }
  out.push('\nTargets');
  for (const target of evaluation.targets) {
    const verdict = target.pass === null ? 'SKIP' : target.pass ? 'PASS' : 'FAIL';
    out.push(`${verdict} ${target.name}: ${target.pass === null ? 'not measured' : target.detail}`);
  }
  return out.join('\n');
}

/** The last lines of every run, exactly in this form. */
function ratioLines(evaluation) {
  return Object.entries(evaluation.ratios).map(([name, value]) => `ratio ${name}: ${value === null ? 'n/a' : value.toFixed(2)}`).join('\n');
}

module.exports = { evaluate, render, ratioLines };
