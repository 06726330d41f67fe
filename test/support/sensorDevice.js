'use strict';

/*
 * The POSIX firmware example (firmware-examples/posix-libcoap) as a device under test: built with
 * make, run as a child process whose stdout lines are kept and waited on, and the Kuzzle
 * provisioning it expects (a least-privilege sensor user, an admin, the index and collections).
 * Used by test/firmware/posix-libcoap.test.js (one Kuzzle) and test/e2e/cluster-failover.test.js
 * (a cluster behind a balancer).
 */

const assert = require('node:assert/strict');
const { spawn, spawnSync } = require('node:child_process');
const path = require('node:path');

const exampleDir = path.resolve(__dirname, '../../firmware-examples/posix-libcoap');
// KUZZLE_SENSOR_BINARY runs the scenarios on another build of the same code (another libcoap).
const binary = process.env.KUZZLE_SENSOR_BINARY || path.join(exampleDir, 'build', 'kuzzle-sensor');
const SENSOR = { username: 'sensor-1', password: 'Sensor-Secret-1' };
const ADMIN = { username: 'admin', password: 'Admin-Secret-1' };
const INDEX = 'iot';

/** Builds the example; a missing make, compiler or libcoap header fails loudly. */
function buildExample() {
  const built = spawnSync('make', ['-C', exampleDir], { encoding: 'utf8' });
  if (built.error?.code === 'ENOENT') throw new Error('make is missing: apt-get install make gcc libcoap3-dev pkg-config');
  assert.equal(built.status, 0, `make failed:\n${built.stdout}${built.stderr}`);
}

/** The example as a child process; its stdout lines, and waits on them. */
class SensorDevice {
  /**
   * @param {string[]} args the example's options (after -H and -p)
   * @param {object} [spec]
   * @param {string} [spec.host='127.0.0.1']
   * @param {number} spec.port
   * @param {object} [spec.env] added to the environment (KUZZLE_PASSWORD, ...)
   * @param {string} [spec.label] prefix of verbose lines (FIRMWARE_TEST_VERBOSE=1)
   */
  constructor(args, { host = '127.0.0.1', port, env = {}, label = 'device' }) {
    this.lines = [];
    this.times = []; // Date.now() at which each line arrived
    this.stderr = '';
    this.waiters = [];
    this.child = spawn(binary, ['-H', host, '-p', String(port), ...args], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let partial = '';
    this.child.stdout.setEncoding('utf8');
    this.child.stdout.on('data', (chunk) => {
      const parts = (partial + chunk).split('\n');
      partial = parts.pop();
      for (const line of parts) {
        this.lines.push(line);
        this.times.push(Date.now());
        if (process.env.FIRMWARE_TEST_VERBOSE === '1') console.log(`[${label}] ${line}`);
      }
      this.check();
    });
    this.child.stderr.on('data', (chunk) => { this.stderr += chunk; });
    this.exited = new Promise((resolve) => this.child.once('exit', (code, signal) => {
      this.exitCode = code;
      this.exitSignal = signal;
      this.check();
      resolve({ code, signal });
    }));
  }

  check() {
    this.waiters = this.waiters.filter((waiter) => !waiter.poll());
  }

  /** Resolves with the first line at or after index `from` matching `pattern`: {match, index}. */
  waitFor(pattern, { from = 0, timeoutMs = 15000 } = {}) {
    return new Promise((resolve, reject) => {
      const waiter = {
        poll: () => {
          for (let i = from; i < this.lines.length; i++) {
            const match = pattern.exec(this.lines[i]);
            if (match) {
              clearTimeout(timer);
              resolve({ match, index: i });
              return true;
            }
          }
          if (this.exitCode !== undefined) {
            clearTimeout(timer);
            reject(new Error(`device exited (${this.exitCode ?? this.exitSignal}) before printing ${pattern}\n${this.output()}`));
            return true;
          }
          return false;
        },
      };
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject(new Error(`no ${pattern} from the device after ${timeoutMs} ms\n${this.output()}`));
      }, timeoutMs);
      if (!waiter.poll()) this.waiters.push(waiter);
    });
  }

  /** Lines from index `from` that match, as match arrays. */
  matches(pattern, from = 0) {
    return this.lines.slice(from).map((line) => pattern.exec(line)).filter(Boolean);
  }

  output() {
    return `--- device stdout (last 60 lines) ---\n${this.lines.slice(-60).join('\n')}\n--- stderr ---\n${this.stderr}`;
  }

  kill(signal = 'SIGKILL') {
    if (this.exitCode === undefined && this.exitSignal === undefined) this.child.kill(signal);
  }
}

/**
 * The sensor user and role, the admin, the index and its collections, on a fresh Kuzzle.
 * `api(request, {token})` runs one Kuzzle API call and returns its result; returns the admin's JWT.
 */
async function provisionSensor(api) {
  // While no admin exists, anonymous has every right: set up a least-privilege sensor user,
  // then the first admin (reset: true takes the rights away from anonymous and default).
  await api({
    controller: 'security', action: 'createRole', _id: 'sensor',
    body: {
      controllers: {
        auth: { actions: { login: true, checkToken: true, getCurrentUser: true } },
        server: { actions: { now: true } },
        document: { actions: { create: true } },
        realtime: { actions: { subscribe: true, unsubscribe: true } },
      },
    },
  }, { token: null });
  await api({
    controller: 'security', action: 'createProfile', _id: 'sensor',
    body: { policies: [{ roleId: 'sensor', restrictedTo: [{ index: INDEX, collections: ['sensors', 'commands'] }] }] },
  }, { token: null });
  await api({
    controller: 'security', action: 'createUser', _id: SENSOR.username,
    body: { content: { profileIds: ['sensor'] }, credentials: { local: SENSOR } },
  }, { token: null });
  await api({
    controller: 'security', action: 'createFirstAdmin', _id: ADMIN.username, reset: true,
    body: { content: {}, credentials: { local: ADMIN } },
  }, { token: null });
  const token = (await api({ controller: 'auth', action: 'login', strategy: 'local', body: ADMIN }, { token: null })).jwt;

  await api({ controller: 'index', action: 'create', index: INDEX }, { token });
  await api({
    controller: 'collection', action: 'create', index: INDEX, collection: 'sensors',
    body: { mappings: { properties: { temperature: { type: 'float' }, humidity: { type: 'integer' }, uptime: { type: 'long' }, ts: { type: 'date', format: 'epoch_millis' } } } },
  }, { token });
  await api({ controller: 'collection', action: 'create', index: INDEX, collection: 'commands' }, { token });
  return token;
}

module.exports = { buildExample, SensorDevice, provisionSensor, SENSOR, ADMIN, INDEX, binary };

