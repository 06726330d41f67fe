/**
 * The plugin's configuration: `server.protocols.coap` of Kuzzle's
 * configuration, with defaults, validated once at init. Values may come from
 * environment overrides as strings ("5683", "true", "2mb"): they are accepted
 * wherever their meaning is unambiguous.
 */

export type Envelope = 'full' | 'compact';

export interface CoapsConfig {
  /** The coaps listener (DTLS 1.2), beside or instead of plain CoAP. */
  enabled: boolean;
  host: string;
  port: number;
  /** OpenSSL cipher list. */
  ciphers: string;
  /** Largest datagram sent, DTLS headers included; block-wise sizes follow from it. */
  mtu: number;
  handshakeTimeoutMs: number;
  maxSessions: number;
  maxHandshakes: number;
  /** A session not heard from for this long ends, with a close_notify. */
  sessionIdleMs: number;
  /** The cookie secret is replaced this often; the previous one still verifies. */
  cookieSecretLifetimeMs: number;
  /** X.509: paths of PEM files; client certificates are verified against `ca` when `verifyClient` asks for them. */
  certificate: string | null;
  privateKey: string | null;
  ca: string | null;
  verifyClient: 'none' | 'optional' | 'require';
  credentials: {
    /** A JSON file of device credentials, reloaded when it changes. */
    file: string | null;
    /** A Kuzzle collection of device credentials, read with the service API key `apiKey` (or the one in `apiKeyFile`). */
    index: string | null;
    collection: string | null;
    apiKey: string | null;
    apiKeyFile: string | null;
    cacheSize: number;
    cacheTtlMs: number;
  };
}

export interface CoapConfig {
  /** Read by Kuzzle too: false keeps the protocol loaded but not listening. */
  enabled: boolean;
  /** The plain CoAP listener on `host`:`port`; false with coaps enabled runs coaps only. */
  plain: boolean;
  /** Read by Kuzzle only: with `enabled`, Kuzzle links tokens to this protocol's connections (TokenExpired). */
  realtimeNotifications: boolean;
  host: string;
  port: number;
  /** How long a CON request may wait for Kuzzle so that its answer rides on the ACK. */
  piggybackWindowMs: number;
  maxTokenLength: number;
  blockSize: number;
  /** The plugin's own cap on request bodies; Kuzzle's server.maxRequestSize applies too. */
  maxRequestSize: number;
  /** The UDP socket's receive buffer (SO_RCVBUF), capped by the kernel's net.core.rmem_max. */
  receiveBufferSize: number;
  idleTimeoutMs: number;
  maxConnections: number;
  envelope: Envelope;
  /** After auth:login over CoAP, later requests of the same endpoint without `jwt` use its token. */
  bindToken: boolean;
  deduplication: { maxEntries: number; maxBytes: number; lifetimeMs: number; unverifiedShare: number };
  blockwise: { maxEntries: number; maxBytes: number; lifetimeMs: number };
  retransmission: { ackTimeoutMs: number; ackRandomFactor: number; maxRetransmit: number; maxInFlight: number; maxInFlightPerPeer: number };
  /** RFC 9175 §2.4: what an address that has not shown it receives may be sent. */
  amplification: { factor: number; echoLifetimeMs: number; echoScope: 'address' | 'endpoint'; maxWithheld: number; maxWithheldBytes: number };
  observe: {
    notificationType: 'non' | 'con' | 'as-registered';
    /** Max-Age (s) of registration answers and notifications; quiet relations get a heartbeat before it runs out. */
    maxAge: number;
    conEvery: number;
    conIntervalMs: number;
    queueLength: number;
    /** NON notifications to a device at most one per round-trip estimate (RFC 7641 §4.5.1). */
    pacing: boolean;
    maxRelations: number;
    maxRelationsPerPeer: number;
  };
  coaps: CoapsConfig;
}

export const DEFAULT_CONFIG: Readonly<CoapConfig> = Object.freeze<CoapConfig>({
  enabled: true,
  plain: true,
  realtimeNotifications: true,
  host: '0.0.0.0',
  port: 5683,
  piggybackWindowMs: 1500,
  maxTokenLength: 32,
  blockSize: 1024,
  maxRequestSize: 1024 * 1024,
  receiveBufferSize: 4 * 1024 * 1024,
  idleTimeoutMs: 300_000,
  maxConnections: 50_000,
  envelope: 'full',
  bindToken: false,
  deduplication: { maxEntries: 100_000, maxBytes: 16 * 1024 * 1024, lifetimeMs: 247_000, unverifiedShare: 0.25 },
  blockwise: { maxEntries: 10_000, maxBytes: 32 * 1024 * 1024, lifetimeMs: 120_000 },
  retransmission: { ackTimeoutMs: 2000, ackRandomFactor: 1.5, maxRetransmit: 4, maxInFlight: 100_000, maxInFlightPerPeer: 16 },
  amplification: { factor: 3, echoLifetimeMs: 60_000, echoScope: 'address', maxWithheld: 10_000, maxWithheldBytes: 4 * 1024 * 1024 },
  observe: {
    notificationType: 'non', maxAge: 120, conEvery: 20, conIntervalMs: 60_000, queueLength: 100, pacing: true, maxRelations: 100_000, maxRelationsPerPeer: 64,
  },
  coaps: {
    enabled: false,
    host: '0.0.0.0',
    port: 5684,
    // RFC 7252 §9.1.3.1's mandatory PSK suite first, then AES-GCM; the ECDSA suites serve a configured certificate.
    ciphers: 'PSK-AES128-CCM8:PSK-AES128-GCM-SHA256:ECDHE-ECDSA-AES128-CCM8:ECDHE-ECDSA-AES128-GCM-SHA256',
    mtu: 1232,
    handshakeTimeoutMs: 20_000,
    maxSessions: 20_000,
    maxHandshakes: 2_000,
    sessionIdleMs: 900_000,
    cookieSecretLifetimeMs: 300_000,
    certificate: null,
    privateKey: null,
    ca: null,
    verifyClient: 'none',
    credentials: { file: null, index: null, collection: null, apiKey: null, apiKeyFile: null, cacheSize: 10_000, cacheTtlMs: 60_000 },
  },
});

export class ConfigError extends Error {}

const SIZE_UNITS: Readonly<Record<string, number>> = { b: 1, kb: 1024, mb: 1024 ** 2, gb: 1024 ** 3 };

/** "1mb", "512KB", "2048" or 2048 → bytes; NaN when it is none of these. */
export function parseSize(value: unknown): number {
  if (typeof value === 'number') return value;
  if (typeof value !== 'string') return NaN;
  const match = /^\s*(\d+(?:\.\d+)?)\s*(b|kb|mb|gb)?\s*$/i.exec(value);
  if (match === null) return NaN;
  return Math.floor(Number(match[1]) * SIZE_UNITS[(match[2] ?? 'b').toLowerCase()]);
}

type Rule = (value: unknown, path: string) => unknown;
interface Rules { [key: string]: Rule | Rules }

function number(min: number, max: number, integer = true): Rule {
  return (value, path) => {
    const n = typeof value === 'string' && value.trim() !== '' ? Number(value) : value;
    if (typeof n !== 'number' || Number.isNaN(n) || (integer && !Number.isInteger(n)) || n < min || n > max) {
      throw new ConfigError(`${path} must be ${integer ? 'an integer' : 'a number'} from ${min} to ${max}, got ${JSON.stringify(value)}`);
    }
    return n;
  };
}

function size(min: number): Rule {
  return (value, path) => {
    const n = parseSize(value);
    if (!Number.isInteger(n) || n < min) {
      throw new ConfigError(`${path} must be a size of at least ${min} bytes (a number or "64kb", "1mb"), got ${JSON.stringify(value)}`);
    }
    return n;
  };
}

function oneOf(...allowed: string[]): Rule {
  return (value, path) => {
    if (typeof value !== 'string' || !allowed.includes(value)) {
      throw new ConfigError(`${path} must be one of ${allowed.map((a) => `"${a}"`).join(', ')}, got ${JSON.stringify(value)}`);
    }
    return value;
  };
}

const boolean: Rule = (value, path) => {
  if (value === true || value === 'true') return true;
  if (value === false || value === 'false') return false;
  throw new ConfigError(`${path} must be true or false, got ${JSON.stringify(value)}`);
};

const nonEmptyString: Rule = (value, path) => {
  if (typeof value !== 'string' || value.trim() === '') throw new ConfigError(`${path} must be a non-empty string`);
  return value.trim();
};

const optionalString: Rule = (value, path) => (value === null ? null : nonEmptyString(value, path));

const blockSizeRule: Rule = (value, path) => {
  const n = number(16, 1024)(value, path) as number;
  if ((n & (n - 1)) !== 0) throw new ConfigError(`${path} must be a power of two from 16 to 1024, got ${n}`);
  return n;
};

const storeRules = { maxEntries: number(1, 1e8), maxBytes: size(1024), lifetimeMs: number(1000, 86_400_000) };

const RULES: Rules = {
  enabled: boolean,
  plain: boolean,
  realtimeNotifications: boolean,
  host: nonEmptyString,
  port: number(0, 65535),
  piggybackWindowMs: number(0, 1900),
  maxTokenLength: number(8, 65804),
  blockSize: blockSizeRule,
  maxRequestSize: size(16),
  receiveBufferSize: size(65536),
  idleTimeoutMs: number(1000, 86_400_000),
  maxConnections: number(1, 10_000_000),
  envelope: oneOf('full', 'compact'),
  bindToken: boolean,
  deduplication: { ...storeRules, unverifiedShare: number(0.01, 0.99, false) },
  blockwise: storeRules,
  retransmission: {
    ackTimeoutMs: number(100, 60_000),
    ackRandomFactor: number(1, 4, false),
    maxRetransmit: number(0, 20),
    maxInFlight: number(1, 10_000_000),
    maxInFlightPerPeer: number(1, 65_536),
  },
  amplification: {
    factor: number(0, 100),
    echoLifetimeMs: number(1000, 3_600_000),
    echoScope: oneOf('address', 'endpoint'),
    maxWithheld: number(1, 1e8),
    maxWithheldBytes: size(1024),
  },
  observe: {
    notificationType: oneOf('non', 'con', 'as-registered'),
    maxAge: number(0, 86_400),
    conEvery: number(1, 1_000_000),
    conIntervalMs: number(1000, 86_400_000),
    queueLength: number(1, 100_000),
    pacing: boolean,
    maxRelations: number(1, 10_000_000),
    maxRelationsPerPeer: number(1, 10_000_000),
  },
  coaps: {
    enabled: boolean,
    host: nonEmptyString,
    port: number(0, 65535),
    ciphers: nonEmptyString,
    mtu: number(256, 65507),
    handshakeTimeoutMs: number(1000, 600_000),
    maxSessions: number(1, 10_000_000),
    maxHandshakes: number(1, 1_000_000),
    sessionIdleMs: number(1000, 86_400_000),
    cookieSecretLifetimeMs: number(1000, 86_400_000),
    certificate: optionalString,
    privateKey: optionalString,
    ca: optionalString,
    verifyClient: oneOf('none', 'optional', 'require'),
    credentials: {
      file: optionalString,
      index: optionalString,
      collection: optionalString,
      apiKey: optionalString,
      apiKeyFile: optionalString,
      cacheSize: number(1, 10_000_000),
      cacheTtlMs: number(1000, 86_400_000),
    },
  },
};

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function apply(rules: Rules, defaults: object, given: unknown, path: string): Record<string, unknown> {
  if (given === undefined || given === null) given = {};
  if (!isPlainObject(given)) throw new ConfigError(`${path} must be an object`);
  const out: Record<string, unknown> = { ...defaults };
  for (const [key, value] of Object.entries(given)) {
    const rule = rules[key];
    const at = `${path}.${key}`;
    if (rule === undefined) {
      throw new ConfigError(`${at} is not an option of this plugin (known: ${Object.keys(rules).join(', ')})`);
    }
    out[key] = typeof rule === 'function' ? rule(value, at) : apply(rule, (defaults as Record<string, object>)[key], value, at);
  }
  return out;
}

/** Validates the user's section against the defaults; throws ConfigError with the option's path. */
export function resolveConfig(given: unknown, path = 'server.protocols.coap'): CoapConfig {
  const config = apply(RULES, DEFAULT_CONFIG, given, path) as unknown as CoapConfig;
  const { coaps } = config;
  if (!config.plain && !coaps.enabled) throw new ConfigError(`${path}.plain is false and ${path}.coaps.enabled too: nothing would listen (use ${path}.enabled: false to turn the protocol off)`);
  if (coaps.enabled) {
    if ((coaps.certificate === null) !== (coaps.privateKey === null)) throw new ConfigError(`${path}.coaps.certificate and ${path}.coaps.privateKey go together`);
    if (coaps.verifyClient !== 'none' && coaps.ca === null) throw new ConfigError(`${path}.coaps.verifyClient needs ${path}.coaps.ca, the CA client certificates are verified against`);
    const { file, index, collection, apiKey, apiKeyFile } = coaps.credentials;
    if (apiKey !== null && apiKeyFile !== null) throw new ConfigError(`${path}.coaps.credentials: give apiKey or apiKeyFile, not both`);
    const inKuzzle = [index, collection, apiKey ?? apiKeyFile].filter((value) => value !== null).length;
    if (inKuzzle !== 0 && inKuzzle !== 3) throw new ConfigError(`${path}.coaps.credentials.index, .collection and .apiKey (or .apiKeyFile) go together (a Kuzzle collection of device credentials, read with that API key)`);
    if (file === null && inKuzzle === 0) throw new ConfigError(`${path}.coaps.credentials needs a file or a Kuzzle collection: without credentials no device can shake hands`);
    if (config.plain && coaps.port === config.port && coaps.port !== 0 && coaps.host === config.host) throw new ConfigError(`${path}.coaps.port is the plain CoAP port`);
  }
  return config;
}
