'use strict';
// Small helpers: medians, ratios, CPU time of a process from /proc, sleeps.
const fs = require('node:fs');

const TICKS_PER_SECOND = 100; // Linux USER_HZ

function median(values) {
  const list = values.filter((v) => typeof v === 'number' && Number.isFinite(v)).sort((a, b) => a - b);
  if (list.length === 0) return null;
  const mid = Math.floor(list.length / 2);
  return list.length % 2 ? list[mid] : (list[mid - 1] + list[mid]) / 2;
}

const ratio = (a, b) => (typeof a === 'number' && typeof b === 'number' && b > 0 ? Math.round((a / b) * 100) / 100 : null);

/** CPU seconds (user + system, all threads) a process used so far; null if unknown. */
function cpuSeconds(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / TICKS_PER_SECOND;
  } catch {
    return null;
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * The result of a closed-loop load run (CoAP or HTTP): timed runs count the requests that
 * completed inside the window, counted runs all of them.
 */
function loadSummary({ counters, busy, codes, durationMs, tStart, tStopped, tDone, cpu, histogram }) {
  const measuredMs = Number.isFinite(durationMs) ? Math.min(durationMs, tStopped - tStart) : tDone - tStart;
  const done = Number.isFinite(durationMs) ? counters.inWindow : counters.completed;
  return {
    ...counters,
    unfinished: busy,
    codes,
    elapsedMs: Math.round(tDone - tStart),
    measuredMs: Math.round(measuredMs),
    rps: Math.round((done / measuredMs) * 1000),
    clientCpu: Math.round(((cpu.user + cpu.system) / 1000 / (tStopped - tStart)) * 100) / 100,
    latencyMs: histogram.summary(),
  };
}

module.exports = { median, ratio, cpuSeconds, sleep, loadSummary };
