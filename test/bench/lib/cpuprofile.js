'use strict';
// Reads a V8 .cpuprofile (node --cpu-prof) and summarizes it: self and total
// time per function, and per category (plugin, its dependencies, Node.js
// internals, GC). Plugin frames are mapped back to src/*.ts with the source
// maps tsc writes next to dist/*.js.
const fs = require('node:fs');
const path = require('node:path');
const { fileURLToPath } = require('node:url');

const ROOT = path.resolve(__dirname, '..', '..', '..');

// --- source maps (VLQ "mappings", enough to find the original line of a generated line) ---
const B64 = Object.fromEntries([...'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'].map((c, i) => [c, i]));
function decodeVlq(segment) {
  const values = [];
  let value = 0, shift = 0;
  for (const char of segment) {
    const digit = B64[char];
    value += (digit & 31) << shift;
    if (digit & 32) shift += 5;
    else {
      values.push(value & 1 ? -(value >> 1) : value >> 1);
      value = 0;
      shift = 0;
    }
  }
  return values;
}
const sourceMaps = new Map();
/** generated (0-based line) -> "src/file.ts:line" (1-based), or null. */
function originalOf(file, line) {
  if (!sourceMaps.has(file)) {
    let lines = null;
    try {
      const map = JSON.parse(fs.readFileSync(`${file}.map`, 'utf8'));
      let source = 0, originalLine = 0;
      lines = map.mappings.split(';').map((group) => {
        let first = null;
        for (const segment of group.split(',').filter(Boolean)) {
          const v = decodeVlq(segment);
          if (v.length >= 4) {
            source += v[1];
            originalLine += v[2];
            first ??= { source, line: originalLine };
          }
        }
        return first;
      });
      lines.sources = map.sources.map((s) => path.relative(ROOT, path.resolve(path.dirname(file), map.sourceRoot ?? '', s)));
    } catch {
      lines = null;
    }
    sourceMaps.set(file, lines);
  }
  const lines = sourceMaps.get(file);
  const hit = lines?.[line];
  return hit ? `${lines.sources[hit.source]}:${hit.line + 1}` : null;
}

function fileOf(url) {
  if (!url) return '';
  try {
    return url.startsWith('file:') ? fileURLToPath(url) : url;
  } catch {
    return url;
  }
}

function category(frame) {
  const file = fileOf(frame.url);
  if (frame.functionName === '(garbage collector)') return 'GC';
  if (frame.functionName === '(idle)') return 'idle';
  if (frame.functionName === '(program)') return 'program (native, unattributed)';
  if (file.startsWith(path.join(ROOT, 'dist'))) return 'plugin (dist/)';
  if (file.includes('node_modules/cbor-x')) return 'cbor-x';
  if (file.includes('node_modules/kuzzle-common-objects')) return 'kuzzle-common-objects';
  if (file.includes('node_modules/coap-packet')) return 'coap-packet';
  if (file.startsWith(path.join(ROOT, 'test'))) return 'bench entry point (test/)';
  if (file.startsWith('node:')) return 'node internals';
  if (file === '') return 'native / builtins';
  return 'other';
}

function label(frame) {
  const file = fileOf(frame.url);
  const name = frame.functionName || '(anonymous)';
  if (!file) return name;
  const original = file.startsWith(path.join(ROOT, 'dist')) ? originalOf(file, frame.lineNumber) : null;
  const where = original ?? `${file.startsWith(ROOT) ? path.relative(ROOT, file) : file.replace(/^.*node_modules\//, '')}:${frame.lineNumber + 1}`;
  return `${name} ${where}`;
}

/** { totalMs, categories: [{name, ms, pct}], self: [...], inclusive: [...] } */
function summarize(profile, top = 20) {
  const nodes = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map();
  for (const n of profile.nodes) for (const child of n.children ?? []) parent.set(child, n.id);
  const selfMs = new Map();
  const totalMs = new Map();
  const categories = new Map();
  let busyMs = 0;
  let allMs = 0;
  for (let i = 0; i < profile.samples.length; i++) {
    const ms = (profile.timeDeltas[i + 1] ?? profile.timeDeltas[i] ?? 0) / 1000;
    const leaf = nodes.get(profile.samples[i]);
    allMs += ms;
    const cat = category(leaf.callFrame);
    categories.set(cat, (categories.get(cat) ?? 0) + ms);
    if (cat === 'idle') continue;
    busyMs += ms;
    const key = label(leaf.callFrame);
    selfMs.set(key, (selfMs.get(key) ?? 0) + ms);
    const seen = new Set();
    for (let id = leaf.id; id !== undefined; id = parent.get(id)) {
      const frame = nodes.get(id).callFrame;
      if (frame.functionName === '(root)') break;
      const k = label(frame);
      if (seen.has(k)) continue;
      seen.add(k);
      totalMs.set(k, (totalMs.get(k) ?? 0) + ms);
    }
  }
  const pluginSelf = new Map();
  for (const [key, ms] of selfMs) if (/ src\//.test(key)) pluginSelf.set(key, ms);
  const pct = (ms) => Math.round((ms / busyMs) * 1000) / 10;
  const rank = (map, n) => [...map].sort((a, b) => b[1] - a[1]).slice(0, n).map(([name, ms]) => ({ name, ms: Math.round(ms), pct: pct(ms) }));
  return {
    allMs: Math.round(allMs),
    busyMs: Math.round(busyMs),
    categories: [...categories].sort((a, b) => b[1] - a[1]).map(([name, ms]) => ({ name, ms: Math.round(ms), pct: name === 'idle' ? null : pct(ms) })),
    self: rank(selfMs, top),
    pluginSelf: rank(pluginSelf, top),
    inclusive: rank(totalMs, top * 2).filter((e) => !/^(\(program\)|\(garbage collector\))/.test(e.name)).slice(0, top),
  };
}

function renderSummary(summary, title) {
  const lines = [`${title}: ${summary.busyMs} ms busy of ${summary.allMs} ms sampled (percentages of busy time)`, '  by category:'];
  for (const c of summary.categories) lines.push(`    ${String(c.pct ?? '-').padStart(5)}%  ${c.name} (${c.ms} ms)`);
  lines.push('  top self time:');
  for (const e of summary.self) lines.push(`    ${String(e.pct).padStart(5)}%  ${e.name}`);
  lines.push('  top self time in the plugin (src/):');
  for (const e of summary.pluginSelf) lines.push(`    ${String(e.pct).padStart(5)}%  ${e.name}`);
  lines.push('  top total time (self + callees):');
  for (const e of summary.inclusive) lines.push(`    ${String(e.pct).padStart(5)}%  ${e.name}`);
  return lines.join('\n');
}

module.exports = { summarize, renderSummary };
