'use strict';
// Latency histogram: 10 µs buckets up to 2 s, exact values beyond. Cheap to
// record at 100k samples/s, precise enough for p50/p99.

const BUCKET_US = 10;
const BUCKETS = 200000;

class Histogram {
  constructor() {
    this.counts = new Uint32Array(BUCKETS);
    this.overflow = [];
    this.count = 0;
    this.max = 0;
  }

  /** Records one latency in milliseconds. */
  record(ms) {
    const bucket = Math.floor((ms * 1000) / BUCKET_US);
    if (bucket < BUCKETS) this.counts[bucket]++;
    else this.overflow.push(ms);
    this.count++;
    if (ms > this.max) this.max = ms;
  }

  /** Latency (ms) under which `p` (0..1) of the samples fall. */
  percentile(p) {
    if (this.count === 0) return null;
    const rank = Math.max(1, Math.ceil(p * this.count));
    let seen = 0;
    for (let i = 0; i < BUCKETS; i++) {
      seen += this.counts[i];
      if (seen >= rank) return ((i + 1) * BUCKET_US) / 1000;
    }
    const rest = [...this.overflow].sort((a, b) => a - b);
    return rest[Math.min(rest.length - 1, rank - seen - 1)];
  }

  summary() {
    const round = (v) => (v === null ? null : Math.round(v * 1000) / 1000);
    return { count: this.count, p50: round(this.percentile(0.5)), p90: round(this.percentile(0.9)), p99: round(this.percentile(0.99)), max: round(this.max) };
  }
}

module.exports = { Histogram };
