/**
 * The transport's clock: milliseconds that never go back. Every transport
 * deadline (piggyback windows, retransmissions, lifetimes of stored entries,
 * Echo freshness) is measured on it, so a wall-clock step cannot expire or
 * revive them.
 */
import { performance } from 'node:perf_hooks';

export function now(): number {
  return performance.now();
}
