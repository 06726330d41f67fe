'use strict';
// --profile: V8 CPU profiles (the profiler --cpu-prof uses, driven through
// node:inspector inside the server so that only the measured part is
// sampled) of the plugin's two hot paths:
// - requests: the plugin with the minimal entry point (its own cost) under the
//   throughput load;
// - fan-out: broadcasts to 10,000 observe relations (hostDouble realtime).
// Profiles are written to test/bench/results/ and summarized (lib/cpuprofile.js).
const fs = require('node:fs');
const path = require('node:path');
const { spawnChild } = require('../lib/procs');
const { summarize, renderSummary } = require('../lib/cpuprofile');

const RESULTS = path.join(__dirname, '..', 'results');
const PLUGIN = path.join(__dirname, '..', 'servers', 'plugin.js');
const NOW = ['api', 'server', 'now'];

async function requests({ agent, params, cpu }) {
  const server = await spawnChild(PLUGIN, [JSON.stringify({ entry: 'minimal' })], { name: 'plugin server (profiled)', cpu });
  try {
    const port = server.info.port;
    await agent.call('coapLoad', { port, path: NOW, sockets: params.sockets, window: params.window, durationMs: 1000 }); // JIT warm-up
    await server.call('profileStart');
    const load = await agent.call('coapLoad', { port, path: NOW, sockets: params.sockets, window: params.window, durationMs: params.profileMs });
    const file = await server.call('profileStop', { file: path.join(RESULTS, `plugin-requests-${Date.now()}.cpuprofile`) });
    const summary = summarize(JSON.parse(fs.readFileSync(file, 'utf8')));
    return { file, rps: load.rps, summary, text: renderSummary(summary, `CPU profile, requests: plugin with the minimal entry point at ${load.rps} req/s (${file})`) };
  } finally {
    await server.stop();
  }
}

async function fanout({ agent, params, cpu }) {
  const server = await spawnChild(PLUGIN, [JSON.stringify({ entry: 'double' })], { name: 'plugin server (fan-out, profiled)', cpu });
  try {
    const port = server.info.port;
    await agent.call('closeFleet');
    const observed = await agent.call('observe', { port, endpoints: params.fanoutEndpoints, perEndpoint: params.fanoutRelations / params.fanoutEndpoints, query: ['index=bench', 'collection=fanout'] }, 300000);
    const broadcast = async () => {
      await agent.call('arm', { expected: observed.registered, timeoutMs: 10000 });
      await server.call('publish', { index: 'bench', collection: 'fanout', expected: 0 });
      return agent.call('notifications', {}, 20000);
    };
    await broadcast(); // warm-up
    await server.call('profileStart', { intervalUs: 100 });
    const runs = 5;
    for (let i = 0; i < runs; i++) await broadcast();
    const file = await server.call('profileStop', { file: path.join(RESULTS, `plugin-fanout-${Date.now()}.cpuprofile`) });
    const summary = summarize(JSON.parse(fs.readFileSync(file, 'utf8')));
    return { file, summary, text: renderSummary(summary, `CPU profile, fan-out: ${runs} broadcasts to ${observed.registered} relations (${file})`) };
  } finally {
    await agent.call('closeFleet').catch(() => {});
    await server.stop();
  }
}

async function profile(ctx) {
  fs.mkdirSync(RESULTS, { recursive: true });
  const result = { requests: await requests(ctx), fanout: await fanout(ctx) };
  result.text = `${result.requests.text}\n\n${result.fanout.text}`;
  return result;
}

module.exports = { profile };
