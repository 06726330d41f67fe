'use strict';

/*
 * A liveness probe for the cluster's nodes, as an orchestrator runs one (Kubernetes' livenessProbe,
 * a systemd watchdog): each node's `GET /_healthcheck` every `intervalMs`; a node that gives no
 * HTTP answer within `timeoutMs`, `failures` times in a row, is handed to `onUnhealthy` once (the
 * cluster host kills it: fencing).
 *
 * Why the balancer needs it: open-source nginx learns that a UDP upstream is gone only from the
 * ICMP errors its datagrams draw. A dead process draws "port unreachable" at once, but a hung one
 * (SIGSTOP, a stuck event loop, a host that lost its network) draws nothing, and nginx keeps the
 * devices pinned to it for proxy_timeout. Kuzzle's cluster evicts such a node (~4 s) but cannot
 * tell nginx. Killing it turns the hang into a crash, which nginx and the devices recover from by
 * themselves. An answer other than 200 (503: Kuzzle is up but a service it needs is not) is not a
 * failure: killing the node would not mend it.
 */

/**
 * @param {object} spec
 * @param {{index: number, httpUrl: string, isRunning(): boolean}[]} spec.nodes
 * @param {(index: number, reason: string) => Promise<void>|void} spec.onUnhealthy called once per failure streak
 * @param {number} [spec.intervalMs=1000]
 * @param {number} [spec.timeoutMs=1000]
 * @param {number} [spec.failures=3] consecutive probes without an answer
 * @returns {{events: {node: number, at: number, reason: string}[], stop(): void, intervalMs, timeoutMs, failures}}
 *   events: what it did, with Date.now() times
 */
function startWatchdog({ nodes, onUnhealthy, intervalMs = 1000, timeoutMs = 1000, failures = 3 }) {
  const streak = new Map(); // node index -> probes without an answer in a row
  const events = [];
  let stopped = false;

  async function probe(node) {
    try {
      await fetch(`${node.httpUrl}/_healthcheck`, { signal: AbortSignal.timeout(timeoutMs) });
      streak.set(node.index, 0);
      return;
    } catch (error) {
      const count = (streak.get(node.index) ?? 0) + 1;
      streak.set(node.index, count);
      if (count !== failures || stopped || !node.isRunning()) return;
      const reason = `${failures} health checks without an answer within ${timeoutMs} ms (last: ${error.cause?.code ?? error.name})`;
      events.push({ node: node.index, at: Date.now(), reason });
      await onUnhealthy(node.index, reason);
    }
  }

  let running = false;
  const timer = setInterval(async () => {
    if (running) return; // the previous round still waits on a hung node
    running = true;
    try {
      // A node that is not running (killed, being restarted) starts a new streak when it is back.
      for (const node of nodes) if (!node.isRunning()) streak.set(node.index, 0);
      await Promise.all(nodes.filter((node) => node.isRunning()).map(probe));
    } finally {
      running = false;
    }
  }, intervalMs);
  timer.unref();

  return {
    events,
    intervalMs,
    timeoutMs,
    failures,
    stop() {
      stopped = true;
      clearInterval(timer);
    },
  };
}

module.exports = { startWatchdog };
