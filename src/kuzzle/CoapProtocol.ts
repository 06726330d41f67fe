/**
 * The Kuzzle protocol: the object Kuzzle instantiates from
 * `protocols/enabled/coap` and drives through the protocol contract (`init`,
 * `joinChannel`, `leaveChannel`, `broadcast`, `notify`, `disconnect`). It
 * wires the CoAP transport to Kuzzle: API requests in, responses out, one
 * Kuzzle connection per device endpoint.
 */
import fs from 'node:fs';
import path from 'node:path';
import { Code, Method, Option } from '../coap/constants';
import type { CoapResponse, Exchange } from '../coap/exchange';
import type { Link } from '../coap/linkFormat';
import { encodeUint } from '../coap/message';
import { DatagramSocket, UdpSocket } from '../coap/datagramSocket';
import { CoapServer, TransportLogger, TransportOptions } from '../coap/server';
import type { DtlsSocket } from '../dtls/dtlsSocket';
import { CONTENT_FORMAT } from '../codec/contentFormat';
import { CoapConfig, ConfigError, Envelope, parseSize, resolveConfig } from '../config';
import { CredentialCollection } from './credentialCollection';
import { CredentialFile } from './credentialFile';
import { CredentialStore, Credentials, DeviceCredential } from './credentials';
import { Endpoint, Endpoints } from './endpoints';
import { Execute, bindExecute } from './execution';
import type { EntryPoint, HostLog, KuzzleResponse, ProtocolContext } from './host';
import { Realtime } from './realtime';
import { createSecureSocket } from './secureSocket';
import { API_ROOT, MappingError, envelopeOf, isApiPath, isObserveRequest, mapApiRequest } from './requestMapping';
import { coapCodeOf, fromKuzzle, pluginError, pluginResult, responseFormat } from './responses';

const MANIFEST = JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', 'manifest.json'), 'utf8')) as { name: string };

/** What a device is told to wait before retrying when the plugin is full. */
const RETRY_AFTER_SECONDS = 30;

/** Actions that bind or unbind a session with `bindToken`. */
const SESSION_ACTIONS = new Set(['auth:login', 'auth:refreshToken', 'auth:logout']);

/** Where the two-step form observes a channel joined by POST /api/realtime/subscribe. */
const CHANNELS_ROOT = 'channels';

const BODY_FORMATS = [CONTENT_FORMAT.CBOR, CONTENT_FORMAT.JSON];
const LINKS: readonly Link[] = [
  { href: `/${API_ROOT}`, attributes: { rt: 'kuzzle.api', ct: BODY_FORMATS, title: 'POST /api/<controller>/<action>' } },
  {
    href: `/${API_ROOT}/realtime/subscribe`,
    attributes: { rt: 'kuzzle.subscription', obs: true, ct: BODY_FORMATS, title: 'GET or FETCH with Observe: 0' },
  },
  { href: `/${CHANNELS_ROOT}`, attributes: { rt: 'kuzzle.channel', obs: true, ct: BODY_FORMATS, title: 'GET /channels/<channel> with Observe: 0' } },
];

function channelOf(path: readonly string[]): string | null {
  return path.length === 2 && path[0] === CHANNELS_ROOT && path[1] !== '' ? path[1] : null;
}

class CoapProtocol {
  /** Kuzzle routes channels and connections to a protocol by this name: the manifest's. */
  readonly protocol: string = MANIFEST.name;
  private config: CoapConfig | null = null;
  private server: CoapServer | null = null;
  private secureServer: CoapServer | null = null;
  private secureSocket: DtlsSocket | null = null;
  private credentials: Credentials | null = null;
  /** The connection the credential collection is read on. */
  private serviceConnection: { entryPoint: EntryPoint; id: string } | null = null;
  private endpoints: Endpoints | null = null;
  private execute: Execute | null = null;
  private log: HostLog | null = null;
  private sweeper: NodeJS.Timeout | null = null;
  private realtime: Realtime | null = null;
  /** Where the sockets listen, once init resolved (the port is the real one when 0 was configured). */
  listening: { address: string; port: number } | null = null;
  listeningSecure: { address: string; port: number } | null = null;

  /** Resolves once the UDP socket listens; rejects on an invalid configuration or a port in use. */
  async init(entryPoint: EntryPoint, context: ProtocolContext): Promise<void> {
    this.log = context.log;
    let config: CoapConfig;
    try {
      config = resolveConfig(entryPoint.config?.protocols?.[this.protocol], `server.protocols.${this.protocol}`);
    } catch (error) {
      if (error instanceof ConfigError) throw new Error(`[${this.protocol}] invalid configuration: ${error.message}`);
      throw error;
    }
    this.config = config;
    if (!config.enabled) {
      context.log.info(`[${this.protocol}] disabled by server.protocols.${this.protocol}.enabled`);
      return;
    }
    const kuzzleLimit = parseSize(entryPoint.config?.maxRequestSize ?? Infinity);
    const maxBody = Math.min(config.maxRequestSize, Number.isFinite(kuzzleLimit) ? kuzzleLimit : Infinity);

    this.execute = bindExecute(entryPoint, context, this.protocol,
      (error) => context.log.error(`[${this.protocol}] error in a Kuzzle response callback: ${(error as Error)?.stack ?? error}`));
    const endpoints = new Endpoints(this.protocol, entryPoint, context, config,
      (endpoint) => this.realtime?.endConnection(endpoint.connection.id),
      (endpoint) => this.realtime?.hasRelations(endpoint.connection.id) === true);
    this.endpoints = endpoints;
    const realtime = new Realtime(this.protocol, this.execute, endpoints, context.log);
    this.realtime = realtime;
    const options: TransportOptions = {
      piggybackWindowMs: config.piggybackWindowMs,
      maxTokenLength: config.maxTokenLength,
      blockSize: config.blockSize,
      maxBodySize: () => maxBody,
      maxPeers: config.maxConnections,
      peerIdleMs: config.idleTimeoutMs,
      deduplication: config.deduplication,
      blockwise: config.blockwise,
      retransmission: config.retransmission,
      amplification: config.amplification,
      observe: config.observe,
      tickMs: 50,
      links: LINKS,
    };
    const section = `server.protocols.${this.protocol}`;
    const socketError = (error: Error): void => context.log.error(`[${this.protocol}] ${error.message}`);
    try {
      if (config.plain) {
        this.server = this.createServer(new UdpSocket(config.host, config.port, config.receiveBufferSize, socketError), options, context.log);
        this.listening = await this.listen(this.server, 'CoAP', `${section}.port and ${section}.host`);
      }
      if (config.coaps.enabled) {
        let secure: ReturnType<typeof createSecureSocket>;
        try {
          secure = createSecureSocket(config, this.credentialsFor(config, entryPoint, context), this.transportLogger(context.log), socketError);
        } catch (error) {
          throw new Error(`[${this.protocol}] coaps: ${(error as Error).message} (see ${section}.coaps)`);
        }
        this.secureSocket = secure.socket;
        this.secureServer = this.createServer(secure.socket, { ...options, blockSize: secure.blockSize }, context.log);
        this.listeningSecure = await this.listen(this.secureServer, 'coaps', `${section}.coaps.port and ${section}.coaps.host`);
      }
    } catch (error) {
      await this.close();
      throw error;
    }
    this.sweeper = setInterval(() => {
      try {
        const removed = endpoints.sweep(Date.now());
        if (removed > 0) context.log.debug(`[${this.protocol}] removed ${removed} idle connection(s)`);
      } catch (error) {
        context.log.error(`[${this.protocol}] error while removing idle connections: ${(error as Error)?.stack ?? error}`);
      }
    }, Math.min(config.idleTimeoutMs / 2, 5000));
    this.sweeper.unref();
  }

  private createServer(socket: DatagramSocket, options: TransportOptions, log: HostLog): CoapServer {
    return new CoapServer(socket, options, (exchange) => this.handle(exchange), this.transportLogger(log),
      (exchange, code, reason, message) =>
        pluginError(code, `network.coap.${reason}`, message, this.envelope(exchange), responseFormat(exchange.accept) ?? CONTENT_FORMAT.CBOR),
      // A coaps device's Kuzzle connection ends with its DTLS session.
      (remote) => this.endpoints?.removeKey(remote.key));
  }

  private async listen(server: CoapServer, scheme: string, where: string): Promise<{ address: string; port: number }> {
    let bound: { address: string; port: number };
    try {
      bound = await server.listen();
    } catch (error) {
      throw new Error(`[${this.protocol}] ${scheme} ${(error as Error).message} (see ${where})`);
    }
    this.log?.info(`[${this.protocol}] ${scheme} listening on UDP [${bound.address}]:${bound.port}`);
    return bound;
  }

  /** The device credential stores coaps reads; revoking one ends its sessions. */
  private credentialsFor(config: CoapConfig, entryPoint: EntryPoint, context: ProtocolContext): Credentials {
    const revoke = (gone: readonly DeviceCredential[]): void => {
      for (const credential of gone) {
        const ended = this.secureSocket?.endIdentity(credential.kind, credential.identity) ?? 0;
        if (ended > 0) context.log.info(`[${this.protocol}] coaps: credential ${credential.kind} ${JSON.stringify(credential.identity)} revoked: ${ended} session(s) ended`);
      }
    };
    const log = this.transportLogger(context.log);
    const stores: CredentialStore[] = [];
    const { file, index, collection, apiKey, apiKeyFile, cacheSize, cacheTtlMs } = config.coaps.credentials;
    if (file !== null) {
      const store = new CredentialFile(file, revoke, log);
      store.watch();
      stores.push(store);
    }
    if (index !== null && collection !== null) {
      // The reads run on a connection of their own, as the service API key's user.
      const connection = new context.ClientConnection(this.protocol, ['127.0.0.1']);
      entryPoint.newConnection(connection);
      this.serviceConnection = { entryPoint, id: connection.id };
      const store = new CredentialCollection({ index, collection, apiKey, apiKeyFile, cacheSize, cacheTtlMs }, this.execute as Execute, connection, revoke, log);
      store.start();
      stores.push(store);
    }
    this.credentials = new Credentials(stores);
    return this.credentials;
  }

  joinChannel(channel: string, connectionId: string): void {
    this.realtime?.joinChannel(channel, connectionId);
  }

  leaveChannel(channel: string, connectionId: string): void {
    this.realtime?.leaveChannel(channel, connectionId);
  }

  broadcast(data: { channels: string[]; payload: Record<string, unknown> }): void {
    this.realtime?.broadcast(data.channels, data.payload);
  }

  notify(data: { channels: string[]; connectionId: string; payload: Record<string, unknown> }): void {
    if (data.payload?.type === 'TokenExpired') {
      // Kept, expired: the device's next request without jwt gets 4.01, not anonymous rights.
      const endpoint = this.endpoints?.byConnection(data.connectionId);
      if (endpoint?.session) endpoint.session.expiresAt = 0;
    }
    this.realtime?.notify(data.channels, data.connectionId, data.payload);
  }

  /** Forgets a device's endpoint: its relations end, its Kuzzle connection is removed. */
  disconnect(connectionId: string): void {
    const endpoint = this.endpoints?.byConnection(connectionId);
    if (endpoint !== undefined) this.endpoints?.remove(endpoint);
  }

  /** Stops listening and removes every connection (tests, hosts that unload protocols). */
  async close(): Promise<void> {
    if (this.sweeper !== null) clearInterval(this.sweeper);
    this.sweeper = null;
    this.endpoints?.removeAll();
    await this.server?.close();
    await this.secureServer?.close();
    this.credentials?.close();
    if (this.serviceConnection !== null) this.serviceConnection.entryPoint.removeConnection(this.serviceConnection.id);
    this.serviceConnection = null;
    this.server = null;
    this.secureServer = null;
    this.secureSocket = null;
    this.credentials = null;
    this.listening = null;
    this.listeningSecure = null;
  }

  /** A snapshot for operators and benchmarks. */
  stats(): Record<string, unknown> {
    return {
      connections: this.endpoints?.size ?? 0,
      connectionsEvicted: this.endpoints?.evicted ?? 0,
      realtime: this.realtime?.stats ?? null,
      transport: this.server?.stats ?? null,
      secureTransport: this.secureServer?.stats ?? null,
      credentials: this.credentials?.stats ?? null,
    };
  }

  private envelope(exchange: Exchange): Envelope {
    return envelopeOf(exchange.query, (this.config as CoapConfig).envelope);
  }

  private handle(exchange: Exchange, fetched = false): void {
    const envelope = this.envelope(exchange);
    const format = responseFormat(exchange.accept);
    const fail = (code: number, id: string, message: string, options?: CoapResponse['options']): void =>
      exchange.respond({ ...pluginError(code, id, message, envelope, format ?? CONTENT_FORMAT.CBOR), options });

    if (format === null) {
      fail(Code.NOT_ACCEPTABLE, 'network.coap.not_acceptable',
        `cannot answer in Content-Format ${exchange.accept}: accept CBOR (60) or JSON (50)`);
      return;
    }
    const channel = channelOf(exchange.path);
    if (channel === null && !isApiPath(exchange.path)) {
      fail(Code.NOT_FOUND, 'network.coap.url_not_found', `no resource at /${exchange.path.join('/')}`);
      return;
    }
    let data: Record<string, unknown> = {};
    if (channel !== null) {
      if (exchange.method !== Method.GET || exchange.observe !== 0) {
        fail(Code.METHOD_NOT_ALLOWED, 'network.coap.method_not_allowed', `/${CHANNELS_ROOT}/<channel> answers GET with Observe: 0`);
        return;
      }
    } else {
      try {
        data = mapApiRequest(exchange, envelope).data;
      } catch (error) {
        if (!(error instanceof MappingError)) throw error;
        fail(error.code, error.id, error.message);
        return;
      }
    }
    // Wall-clock time: sessions expire at Kuzzle's expiresAt, a date.
    const now = Date.now();
    const endpoint = (this.endpoints as Endpoints).touch(exchange.remote, now, exchange.verified);
    if (endpoint === undefined) {
      fail(Code.SERVICE_UNAVAILABLE, 'network.coap.too_many_connections',
        'this server has reached its maximum number of devices; retry later',
        [{ number: Option.MAX_AGE, value: encodeUint(RETRY_AFTER_SECONDS) }]);
      return;
    }
    const realtime = this.realtime as Realtime;
    const security = exchange.peer.security;
    if (data.jwt === undefined && endpoint.session === null && security !== null) {
      // coaps: the device's DTLS identity names its Kuzzle identity, an API key.
      const token = (this.credentials as Credentials).tokenOf(security);
      if (token === undefined && !fetched) {
        // Not in memory (a credential collection's cache): fetched once, then the request runs.
        const retry = (): void => this.handle(exchange, true);
        (this.credentials as Credentials).fetch(security.kind, security.identity).then(retry, retry);
        return;
      }
      if (token === undefined) {
        fail(Code.SERVICE_UNAVAILABLE, 'network.coap.credentials_unavailable', 'the device credentials cannot be read now; retry later');
        return;
      }
      if (token === null) {
        fail(Code.UNAUTHORIZED, 'security.credential.revoked', `the credential of ${security.kind} ${JSON.stringify(security.identity)} is no longer valid: its session ends`);
        return;
      }
      data.jwt = token;
    }
    if (data.jwt === undefined && endpoint.session !== null) {
      if (endpoint.session.expiresAt <= now) {
        endpoint.session = null;
        realtime.expireSession(endpoint.connection.id, 'the token bound to this device expired: log in again');
        fail(Code.UNAUTHORIZED, 'security.token.expired', 'the token bound to this device expired: log in again');
        return;
      }
      data.jwt = endpoint.session.jwt;
    }
    if (channel !== null) {
      realtime.attach(exchange, endpoint, channel, format, envelope);
      return;
    }
    if (isObserveRequest(exchange)) {
      if (exchange.observe === 0) realtime.subscribe(exchange, endpoint, data, format, envelope);
      // Any other Observe value deregisters: the transport has already ended the relation of this token.
      else exchange.respond(pluginResult({ observing: false }, envelope, format));
      return;
    }
    const action = `${data.controller}:${data.action}`;
    // Binding or unbinding a session is for the device that receives at its address: a spoofed
    // auth:login must not fix the attacker's session on a victim's endpoint, nor a spoofed logout
    // unbind it. So these requests carry a fresh Echo value (4.01 + Echo first, RFC 9175).
    if (this.config?.bindToken && SESSION_ACTIONS.has(action) && !exchange.requireEcho()) return;
    const jwt = data.jwt;
    try {
      (this.execute as Execute)(data, endpoint.connection, (response: KuzzleResponse) => {
        // A fault here ends this exchange with 5.00; the process and the other exchanges go on.
        try {
          if (action === 'realtime:subscribe') realtime.subscribed(response);
          else if (this.config?.bindToken) this.bindSession(endpoint, action, response, jwt);
          exchange.respond(fromKuzzle(response, envelope, format));
        } catch (error) {
          this.log?.error(`[${this.protocol}] cannot answer ${action} to ${exchange.remote.key}: ${(error as Error)?.stack ?? error}`);
          fail(Code.INTERNAL_SERVER_ERROR, 'network.coap.unencodable_response', 'the response could not be encoded or sent');
        }
      });
    } catch (error) {
      // Kuzzle's Request constructor validates its input and throws Kuzzle errors (status, id).
      const { status, id, message } = error as { status?: number; id?: string; message?: string };
      fail(coapCodeOf(status ?? 400), id ?? 'network.coap.invalid_request', message ?? String(error));
    }
  }

  /**
   * With `bindToken`, auth:login and auth:refreshToken bind their token to the endpoint, auth:logout
   * with the bound token unbinds it. A login never replaces the live binding of another user: the
   * device logs out first. `jwt` is the token the request ran with.
   */
  private bindSession(endpoint: Endpoint, action: string, response: KuzzleResponse, jwt: unknown): void {
    if (response.status !== 200) return;
    const bound = endpoint.session;
    if (action === 'auth:logout') {
      if (bound !== null && jwt === bound.jwt) endpoint.session = null;
      return;
    }
    if (action !== 'auth:login' && action !== 'auth:refreshToken') return;
    const result = (response.content as { result?: { _id?: unknown; jwt?: unknown; expiresAt?: unknown } } | null)?.result;
    if (typeof result?.jwt !== 'string') return;
    const kuid = typeof result._id === 'string' ? result._id : null;
    if (bound !== null && bound.expiresAt > Date.now() && bound.kuid !== kuid) {
      this.log?.warn(`[${this.protocol}] ${action} of user ${kuid} from ${endpoint.remote.key} did not replace the token bound there for user ${bound.kuid}: log out first`);
      return;
    }
    const expiresAt = typeof result.expiresAt === 'number' && result.expiresAt > 0 ? result.expiresAt : Infinity;
    endpoint.session = { jwt: result.jwt, expiresAt, kuid };
  }

  private transportLogger(log: HostLog): TransportLogger {
    const prefix = `[${this.protocol}] `;
    return {
      debug: (message) => log.debug(prefix + message),
      info: (message) => log.info(prefix + message),
      warn: (message) => log.warn(prefix + message),
      error: (message) => log.error(prefix + message),
    };
  }
}

export = CoapProtocol;
