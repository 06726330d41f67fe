/**
 * The Kuzzle protocol: the object Kuzzle instantiates from
 * `protocols/enabled/coap` and drives through the protocol contract (`init`,
 * `joinChannel`, `leaveChannel`, `broadcast`, `notify`, `disconnect`). It
 * wires the CoAP transport to Kuzzle: API requests in, responses out, one
 * Kuzzle connection per device endpoint.
 */
import fs from 'node:fs';
import path from 'node:path';
import { Code, Option } from '../coap/constants';
import type { CoapResponse, Exchange } from '../coap/exchange';
import type { Link } from '../coap/linkFormat';
import { encodeUint } from '../coap/message';
import { CoapServer, TransportLogger } from '../coap/server';
import { CONTENT_FORMAT } from '../codec/contentFormat';
import { CoapConfig, ConfigError, Envelope, parseSize, resolveConfig } from '../config';
import { Channels } from './channels';
import { Endpoints } from './endpoints';
import { Execute, bindExecute } from './execution';
import type { EntryPoint, HostLog, KuzzleResponse, ProtocolContext } from './host';
import { API_ROOT, MappingError, envelopeOf, isApiPath, mapApiRequest } from './requestMapping';
import { coapCodeOf, fromKuzzle, pluginError, responseFormat } from './responses';

const MANIFEST = JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', 'manifest.json'), 'utf8')) as { name: string };

/** What a device is told to wait before retrying when the plugin is full. */
const RETRY_AFTER_SECONDS = 30;

const LINKS: readonly Link[] = [
  {
    href: `/${API_ROOT}`,
    attributes: { rt: 'kuzzle.api', ct: [CONTENT_FORMAT.CBOR, CONTENT_FORMAT.JSON], title: 'POST /api/<controller>/<action>' },
  },
];

class CoapProtocol {
  /** Kuzzle routes channels and connections to a protocol by this name: the manifest's. */
  readonly protocol: string = MANIFEST.name;
  private config: CoapConfig | null = null;
  private server: CoapServer | null = null;
  private endpoints: Endpoints | null = null;
  private execute: Execute | null = null;
  private log: HostLog | null = null;
  private sweeper: NodeJS.Timeout | null = null;
  private readonly channels = new Channels();
  /** Where the socket listens, once init resolved (the port is the real one when 0 was configured). */
  listening: { address: string; port: number } | null = null;

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
    const kuzzleLimit = parseSize(entryPoint.config?.maxRequestSize ?? Infinity);
    const maxBody = Math.min(config.maxRequestSize, Number.isFinite(kuzzleLimit) ? kuzzleLimit : Infinity);

    this.execute = bindExecute(entryPoint, context, this.protocol);
    const endpoints = new Endpoints(this.protocol, entryPoint, context, config);
    this.endpoints = endpoints;
    this.server = new CoapServer(
      {
        host: config.host,
        port: config.port,
        piggybackWindowMs: config.piggybackWindowMs,
        maxTokenLength: config.maxTokenLength,
        blockSize: config.blockSize,
        maxBodySize: () => maxBody,
        deduplication: config.deduplication,
        blockwise: config.blockwise,
        retransmission: config.retransmission,
        tickMs: 50,
        links: LINKS,
      },
      (exchange) => this.handle(exchange),
      this.transportLogger(context.log),
      (exchange, code, reason, message) =>
        pluginError(code, `network.coap.${reason}`, message, this.envelope(exchange), responseFormat(exchange.accept) ?? CONTENT_FORMAT.CBOR),
    );
    const bound = await this.server.listen();
    this.listening = bound;
    this.sweeper = setInterval(() => {
      const removed = endpoints.sweep(Date.now());
      if (removed > 0) context.log.debug(`[${this.protocol}] removed ${removed} idle connection(s)`);
    }, Math.min(config.idleTimeoutMs / 2, 5000));
    this.sweeper.unref();
    context.log.info(`[${this.protocol}] CoAP listening on UDP [${bound.address}]:${bound.port}`);
  }

  joinChannel(channel: string, connectionId: string): void {
    this.channels.join(channel, connectionId);
  }

  leaveChannel(channel: string, connectionId: string): void {
    this.channels.leave(channel, connectionId);
  }

  /**
   * Notifications reach a device through a CoAP Observe relation on a channel;
   * until a device holds one there is nothing on the wire to send them on.
   */
  broadcast(data: { channels: string[]; payload: unknown }): void {
    this.log?.silly?.(`[${this.protocol}] broadcast on ${data.channels.length} channel(s): no observe relation`);
  }

  notify(data: { channels: string[]; connectionId: string; payload: unknown }): void {
    this.log?.silly?.(`[${this.protocol}] notify ${data.connectionId}: no observe relation`);
  }

  /** Forgets a device's endpoint: its Kuzzle connection is removed, its channels left. */
  disconnect(connectionId: string): void {
    const endpoint = this.endpoints?.byConnection(connectionId);
    if (endpoint !== undefined) this.endpoints?.remove(endpoint);
    this.channels.forget(connectionId);
  }

  /** Stops listening and removes every connection (tests, hosts that unload protocols). */
  async close(): Promise<void> {
    if (this.sweeper !== null) clearInterval(this.sweeper);
    this.sweeper = null;
    this.endpoints?.removeAll();
    await this.server?.close();
    this.server = null;
    this.listening = null;
  }

  /** A snapshot for operators and benchmarks. */
  stats(): Record<string, unknown> {
    return {
      connections: this.endpoints?.size ?? 0,
      channels: this.channels.channelCount,
      transport: this.server?.stats ?? null,
    };
  }

  private envelope(exchange: Exchange): Envelope {
    return envelopeOf(exchange.query, (this.config as CoapConfig).envelope);
  }

  private handle(exchange: Exchange): void {
    const envelope = this.envelope(exchange);
    const format = responseFormat(exchange.accept);
    const fail = (code: number, id: string, message: string, options?: CoapResponse['options']): void =>
      exchange.respond({ ...pluginError(code, id, message, envelope, format ?? CONTENT_FORMAT.CBOR), options });

    if (format === null) {
      fail(Code.NOT_ACCEPTABLE, 'network.coap.not_acceptable',
        `cannot answer in Content-Format ${exchange.accept}: accept CBOR (60) or JSON (50)`);
      return;
    }
    if (!isApiPath(exchange.path)) {
      fail(Code.NOT_FOUND, 'network.coap.url_not_found', `no resource at /${exchange.path.join('/')}`);
      return;
    }
    let data: Record<string, unknown>;
    try {
      data = mapApiRequest(exchange, envelope).data;
    } catch (error) {
      if (!(error instanceof MappingError)) throw error;
      fail(error.code, error.id, error.message);
      return;
    }
    const endpoint = (this.endpoints as Endpoints).touch(exchange.remote, exchange.receivedAt);
    if (endpoint === undefined) {
      fail(Code.SERVICE_UNAVAILABLE, 'network.coap.too_many_connections',
        'this server has reached its maximum number of devices; retry later',
        [{ number: Option.MAX_AGE, value: encodeUint(RETRY_AFTER_SECONDS) }]);
      return;
    }
    try {
      (this.execute as Execute)(data, endpoint.connection, (response: KuzzleResponse) => {
        let answer: CoapResponse;
        try {
          answer = fromKuzzle(response, envelope, format);
        } catch (error) {
          this.log?.error(`[${this.protocol}] cannot encode a response: ${(error as Error).message}`);
          fail(Code.INTERNAL_SERVER_ERROR, 'network.coap.unencodable_response', 'the response could not be encoded');
          return;
        }
        exchange.respond(answer);
      });
    } catch (error) {
      // Kuzzle's Request constructor validates its input and throws Kuzzle errors (status, id).
      const { status, id, message } = error as { status?: number; id?: string; message?: string };
      fail(coapCodeOf(status ?? 400), id ?? 'network.coap.invalid_request', message ?? String(error));
    }
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
