'use strict';
// What the scenarios that run timed load rounds share: one run with the server's CPU use
// measured around it, its progress line, and the medians of the rounds.
const { median, cpuSeconds } = require('./util');

/** CPU seconds used so far by a process, or by several together (a cluster's nodes); null if one is unknown. */
function cpuOf(pids) {
  let sum = 0;
  for (const pid of [].concat(pids)) {
    const seconds = cpuSeconds(pid);
    if (seconds === null) return null;
    sum += seconds;
  }
  return sum;
}

/**
 * Runs `load()` (an agent call returning a load summary) and adds the server's CPU use (`pid`: one
 * process or several): a share of a core, and µs per request.
 */
async function measuredRun(pid, load) {
  const cpu0 = cpuOf(pid);
  const result = await load();
  const cpu1 = cpuOf(pid);
  const known = cpu0 !== null && cpu1 !== null;
  result.serverCpu = known ? Math.round(((cpu1 - cpu0) / (result.elapsedMs / 1000)) * 100) / 100 : null;
  // CPU time the server spent per answered request: steadier than req/s on a shared machine.
  result.cpuUsPerRequest = known && result.completed > 0 ? Math.round(((cpu1 - cpu0) * 1e6) / result.completed) : null;
  return result;
}

/** A round's progress line. */
function roundLine(round, rounds, id, result) {
  const lost = result.unfinished || result.gaveUp ? `, lost ${result.unfinished + (result.gaveUp ?? 0)}` : '';
  return `  round ${round + 1}/${rounds} ${id}: ${result.rps} req/s, p50 ${result.latencyMs.p50} ms, p99 ${result.latencyMs.p99} ms, server CPU ${result.serverCpu} (${result.cpuUsPerRequest} µs/req), client CPU ${result.clientCpu}${lost}`;
}

/**
 * A warm-up run of each target (`warmupMs`), then `rounds` rounds over them, the order rotated
 * from round to round so that no target always follows the same neighbour. `run(target, params)`
 * is one measured run. Returns Map target.id -> [result of each round].
 */
async function interleavedRounds(targets, run, params, progress) {
  for (const target of targets) await run(target, { ...params, durationMs: params.warmupMs });
  const runs = new Map(targets.map((target) => [target.id, []]));
  for (let round = 0; round < params.rounds; round++) {
    for (const target of targets.map((_, i) => targets[(i + round) % targets.length])) {
      const result = await run(target, params);
      runs.get(target.id).push(result);
      progress(roundLine(round, params.rounds, target.id, result));
    }
  }
  return runs;
}

/** The medians of a target's rounds, what was lost, the answer codes, and each round. */
function roundsSummary(runs) {
  return {
    rps: median(runs.map((r) => r.rps)),
    p50: median(runs.map((r) => r.latencyMs.p50)),
    p99: median(runs.map((r) => r.latencyMs.p99)),
    serverCpu: median(runs.map((r) => r.serverCpu)),
    cpuUsPerRequest: median(runs.map((r) => r.cpuUsPerRequest)),
    clientCpu: median(runs.map((r) => r.clientCpu)),
    lost: runs.reduce((sum, r) => sum + (r.unfinished ?? 0) + (r.gaveUp ?? 0) + (r.errors ?? 0), 0),
    codes: runs.reduce((all, r) => { for (const [c, n] of Object.entries(r.codes)) all[c] = (all[c] ?? 0) + n; return all; }, {}),
    rounds: runs.map((r) => ({ rps: r.rps, p50: r.latencyMs.p50, p99: r.latencyMs.p99, serverCpu: r.serverCpu, cpuUsPerRequest: r.cpuUsPerRequest, clientCpu: r.clientCpu, retransmissions: r.retransmissions, separate: r.separate, dedup: r.dedup })),
  };
}

module.exports = { measuredRun, interleavedRounds, roundLine, roundsSummary, cpuOf };
