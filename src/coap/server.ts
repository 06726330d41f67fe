/**
 * The CoAP message layer of a server, on one UDP socket (RFC 7252, 7959, 6690,
 * 7967). It owns: decoding and rejecting datagrams, deduplication, piggybacked
 * or separate responses and their retransmission, Block1 reassembly, Block2
 * delivery from stored bodies, and `/.well-known/core`. It knows nothing of
 * what requests mean: each request becomes an Exchange handed to `handler`.
 *
 * Time is driven by one periodic tick, not by timers per message.
 */
import dgram from 'node:dgram';
import dns from 'node:dns';
import net from 'node:net';
import { Block1Assembler, Block2Store, Framed, blockOf, blockSize, decodeBlock, encodeBlock, szxFor } from './blockwise';
import { Code, NO_RESPONSE_BITS, OPTION_FORMATS, Option, Type, UNDERSTOOD_CRITICAL, codeText } from './constants';
import { Deduplicator } from './deduplication';
import { CoapResponse, Exchange, Remote, Responder } from './exchange';
import { Link, filterLinks, serializeLinks } from './linkFormat';
import {
  CoapMessage,
  CoapOption,
  decodeMessage,
  encodeMessage,
  encodeUint,
  findOption,
  readUint,
  withContentFormat,
  withOption,
} from './message';
import { MessageIds } from './messageIds';
import { Observation, ObserveLayer, ObserveOptions } from './observe';
import { RetransmissionParameters, Outcome, Retransmitter } from './retransmission';
import { unanswerableSource } from './sourceAddress';

export interface TransportLogger {
  debug(message: string): void;
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
}

export interface TransportOptions {
  host: string;
  port: number;
  /** How long a CON request may wait for its answer to ride on the ACK. */
  piggybackWindowMs: number;
  maxTokenLength: number;
  /** Preferred Block2 size (16..1024, a power of two). */
  blockSize: number;
  /** Largest request body, whole or reassembled, in bytes. */
  maxBodySize: () => number;
  /** How many remote endpoints the server keeps per-endpoint state for (message-ID sequences). */
  maxPeers: number;
  deduplication: { maxEntries: number; maxBytes: number; lifetimeMs: number };
  blockwise: { maxEntries: number; maxBytes: number; lifetimeMs: number };
  retransmission: RetransmissionParameters;
  observe: ObserveOptions;
  tickMs: number;
  links: readonly Link[];
}

export type RequestHandler = (exchange: Exchange) => void | Promise<void>;

/** Lets the application give transport errors its own body shape. */
export type ErrorFormatter = (exchange: Exchange, code: number, reason: string, message: string) => CoapResponse;

export const diagnosticError: ErrorFormatter = (_exchange, code, _reason, message) => ({
  code,
  payload: Buffer.from(message),
});

const EMPTY = Buffer.alloc(0);
/** Names a message ID of one endpoint: deduplication and retransmission are keyed by it. */
function messageKey(remote: Remote, messageId: number): string {
  return `${remote.key}#${messageId}`;
}

function isWellKnownCore(path: readonly string[]): boolean {
  return path.length === 2 && path[0] === '.well-known' && path[1] === 'core';
}
const LINK_FORMAT = 40;
const SAFE_METHODS = new Set([1, 5]); // GET, FETCH: may run again to serve a block

export class CoapServer implements Responder {
  private socket: dgram.Socket | null = null;
  private ticker: NodeJS.Timeout | null = null;
  private lastSweep = 0;
  private droppedLogged = 0;
  private readonly messageIds: MessageIds;
  private readonly dedup: Deduplicator;
  private readonly uploads: Block1Assembler;
  private readonly bodies: Block2Store;
  private readonly retransmitter: Retransmitter;
  private readonly observers: ObserveLayer;
  /** CON requests still inside their piggyback window, oldest first, by deduplication key. */
  private readonly awaitingAck = new Map<string, Exchange>();
  private readonly preferredSzx: number;
  private readonly counters = { received: 0, badSource: 0, malformed: 0, duplicates: 0, rejected: 0, handlerErrors: 0, sendErrors: 0, tickErrors: 0 };

  constructor(
    private readonly options: TransportOptions,
    private readonly handler: RequestHandler,
    private readonly log: TransportLogger,
    private readonly formatError: ErrorFormatter = diagnosticError,
  ) {
    this.dedup = new Deduplicator(options.deduplication, options.deduplication.lifetimeMs);
    this.uploads = new Block1Assembler(options.blockwise, options.maxBodySize);
    this.bodies = new Block2Store(options.blockwise);
    this.retransmitter = new Retransmitter(options.retransmission, (datagram, to) => this.send(datagram, to));
    this.preferredSzx = szxFor(options.blockSize);
    this.messageIds = new MessageIds(options.maxPeers);
    this.observers = new ObserveLayer(options.observe, this);
  }

  /** Resolves once the socket listens; rejects with a readable reason (port in use, bad address). */
  listen(): Promise<{ address: string; port: number }> {
    const { host, port } = this.options;
    const ipv6 = net.isIPv6(host);
    const socket = dgram.createSocket({
      type: ipv6 ? 'udp6' : 'udp4',
      ipv6Only: false,
      reuseAddr: false,
      // Peers are always addresses: skip the name lookup that defers every send by a tick
      // (a host name given as the listen address is still resolved).
      lookup: (address, options, callback) => {
        const family = net.isIP(address);
        if (family === 0) dns.lookup(address, options, callback);
        else callback(null, address, family);
      },
    });
    return new Promise((resolve, reject) => {
      const onError = (error: NodeJS.ErrnoException): void => {
        socket.close();
        const why = error.code === 'EADDRINUSE' ? 'the port is in use' : error.message;
        reject(new Error(`CoAP cannot listen on UDP [${host}]:${port}: ${why}`));
      };
      socket.once('error', onError);
      socket.bind(port, host, () => {
        socket.off('error', onError);
        socket.on('error', (error) => this.log.error(`CoAP socket error: ${error.message}`));
        socket.on('message', (datagram, rinfo) => this.receive(datagram, rinfo));
        this.socket = socket;
        this.ticker = setInterval(() => this.tick(Date.now()), this.options.tickMs);
        this.ticker.unref();
        const bound = socket.address();
        resolve({ address: bound.address, port: bound.port });
      });
    });
  }

  close(): Promise<void> {
    if (this.ticker !== null) clearInterval(this.ticker);
    this.ticker = null;
    this.observers.endAll('closed');
    this.retransmitter.cancelAll();
    this.awaitingAck.clear();
    this.messageIds.clear();
    this.dedup.clear();
    this.uploads.clear();
    this.bodies.clear();
    const socket = this.socket;
    this.socket = null;
    return new Promise((resolve) => (socket ? socket.close(() => resolve()) : resolve()));
  }

  get stats(): Record<string, unknown> {
    return {
      ...this.counters,
      deduplication: this.dedup.stats,
      uploads: this.uploads.stats,
      storedBodies: this.bodies.stats,
      awaitingAck: this.awaitingAck.size,
      retransmitting: this.retransmitter.size,
      observe: this.observers.stats,
    };
  }

  /** Sends a CON message and tracks it until it is acknowledged, reset or given up. */
  sendConfirmable(to: Remote, build: (messageId: number) => Buffer, onDone?: (outcome: Outcome) => void): number {
    const messageId = this.allocateMessageId(to);
    this.retransmitter.start(messageKey(to, messageId), build(messageId), to, Date.now(), onDone);
    return messageId;
  }

  sendNonConfirmable(to: Remote, build: (messageId: number) => Buffer): number {
    const messageId = this.allocateMessageId(to);
    this.send(build(messageId), to);
    return messageId;
  }

  // ---- receiving -------------------------------------------------------

  private receive(datagram: Buffer, rinfo: dgram.RemoteInfo): void {
    this.counters.received++;
    const badSource = unanswerableSource(rinfo.address, rinfo.port);
    if (badSource !== null) {
      this.counters.badSource++;
      this.log.debug(`CoAP: dropped a datagram of ${datagram.length} bytes from an unanswerable ${badSource}`);
      return;
    }
    let message: CoapMessage;
    try {
      message = decodeMessage(datagram);
    } catch (error) {
      this.rejectMalformed(datagram, rinfo, (error as Error).message);
      return;
    }
    const remote: Remote = {
      address: rinfo.address,
      port: rinfo.port,
      family: rinfo.family as Remote['family'],
      key: `${rinfo.address}|${rinfo.port}`,
    };
    try {
      this.dispatch(message, remote);
    } catch (error) {
      // A bug of ours must cost one request, never the process.
      this.counters.handlerErrors++;
      this.log.error(`CoAP: error while handling a message from ${remote.key}: ${(error as Error).stack}`);
    }
  }

  private rejectMalformed(datagram: Buffer, rinfo: dgram.RemoteInfo, why: string): void {
    this.counters.malformed++;
    this.log.debug(`CoAP: dropped a malformed datagram of ${datagram.length} bytes from ${rinfo.address}:${rinfo.port}: ${why}`);
    // RFC 7252 §4.2: a CON that cannot be processed is rejected with a RST, when its header can be read.
    if (datagram.length >= 4 && datagram[0] >> 6 === 1 && ((datagram[0] >> 4) & 3) === Type.CON) {
      this.send(encodeMessage(Type.RST, Code.EMPTY, datagram.readUInt16BE(2), EMPTY, [], null), rinfo);
    }
  }

  private dispatch(message: CoapMessage, remote: Remote): void {
    const { type, code } = message;
    if (type === Type.ACK || type === Type.RST) {
      const settled = this.retransmitter.settle(messageKey(remote, message.messageId), type === Type.ACK ? 'acked' : 'reset');
      if (!settled && type === Type.RST) this.observers.reset(remote, message.messageId);
      return;
    }
    if (code === Code.EMPTY || code >> 5 !== 0 || message.token.length > this.options.maxTokenLength) {
      // A CON ping, a response where a request belongs or a token we will not keep: RST (RFC 7252 §4.2, RFC 8974 §2.2).
      if (type === Type.CON) this.send(encodeMessage(Type.RST, Code.EMPTY, message.messageId, EMPTY, [], null), remote);
      return;
    }
    const now = Date.now();
    const key = messageKey(remote, message.messageId);
    const seen = this.dedup.check(key, now);
    if (seen.state !== 'new') {
      this.counters.duplicates++;
      if (type === Type.CON) this.answerDuplicate(key, seen.state === 'answered' ? seen.answer : null, message, remote);
      return;
    }
    const exchange = new Exchange(this, message, remote, now, key);
    if (type === Type.CON) this.awaitingAck.set(key, exchange);
    this.process(exchange, now);
  }

  private answerDuplicate(key: string, answer: Buffer | null, message: CoapMessage, remote: Remote): void {
    if (answer !== null) {
      this.send(answer, remote);
      return;
    }
    // Still being processed: acknowledge now so the client stops retransmitting; the answer will be separate.
    const exchange = this.awaitingAck.get(key);
    if (exchange !== undefined) this.acknowledge(exchange);
    else this.send(encodeMessage(Type.ACK, Code.EMPTY, message.messageId, EMPTY, [], null), remote);
  }

  private process(exchange: Exchange, now: number): void {
    const problem = this.readOptions(exchange);
    if (problem !== null) {
      if (problem.reject === true && exchange.message.type === Type.NON) {
        // Rejecting a NON (RFC 7252 §4.3) is an RST at most: no response for a message not understood.
        this.counters.rejected++;
        this.send(encodeMessage(Type.RST, Code.EMPTY, exchange.message.messageId, EMPTY, [], null), exchange.remote);
        return;
      }
      this.fail(exchange, problem.code, problem.reason, problem.message);
      return;
    }
    if (exchange.method > 7) {
      this.fail(exchange, Code.METHOD_NOT_ALLOWED, 'method_not_allowed', `unknown method code ${codeText(exchange.method)}`);
      return;
    }
    if (exchange.block1 !== null) {
      if (!this.reassemble(exchange, now)) return;
    } else if (exchange.payload.length > this.options.maxBodySize()) {
      this.tooLarge(exchange, this.options.maxBodySize());
      return;
    }
    if (exchange.block2 !== null && exchange.block2.num > 0) {
      const stored = this.bodies.get(exchange.resourceKey, now);
      if (stored !== undefined) {
        exchange.answered = true;
        this.awaitingAck.delete(exchange.key);
        this.transmit(exchange, blockOf(stored, [], exchange.block2.num, this.szxFor(exchange), exchange.wantsSize2) ?? this.pastTheEnd(exchange));
        return;
      }
      if (!SAFE_METHODS.has(exchange.method)) {
        this.fail(exchange, Code.REQUEST_ENTITY_INCOMPLETE, 'block_expired',
          'the response these blocks belong to is no longer held: repeat the request from block 0');
        return;
      }
    }
    if (exchange.observe === 1 && SAFE_METHODS.has(exchange.method)) {
      // Deregistration (RFC 7641 §3.6): the relation of this token ends; the request is then served as usual.
      const relation = this.observers.find(exchange.remote, exchange.token);
      if (relation !== undefined) this.observers.end(relation, 'deregistered');
    }
    if (isWellKnownCore(exchange.path)) {
      this.serveLinks(exchange);
      return;
    }
    this.runHandler(exchange);
  }

  /**
   * Reads every option once; returns the first reason to refuse the request. `reject` marks an
   * unrecognised critical option, which rejects a NON outright (RFC 7252 §5.4.1).
   */
  private readOptions(exchange: Exchange): { code: number; reason: string; message: string; reject?: true } | null {
    let previous = -1;
    for (const { number, value } of exchange.message.options) {
      const format = OPTION_FORMATS.get(number);
      const repeated = number === previous;
      previous = number;
      if (format !== undefined && (value.length < format.min || value.length > format.max || (repeated && !format.repeatable))) {
        // Unrecognised (RFC 7252 §5.4.5): an elective option is ignored, a critical one refuses the request.
        if ((number & 1) === 0) continue;
        const what = repeated && !format.repeatable ? 'repeated' : `of invalid length ${value.length}`;
        return { code: Code.BAD_OPTION, reason: 'bad_option', message: `critical option ${number} ${what}`, reject: true };
      }
      switch (number) {
        case Option.URI_PATH: exchange.path.push(value.toString('utf8')); break;
        case Option.URI_QUERY: exchange.query.push(value.toString('utf8')); break;
        case Option.CONTENT_FORMAT: exchange.contentFormat ??= readUint(value); break;
        case Option.ACCEPT: exchange.accept ??= readUint(value); break;
        case Option.OBSERVE: exchange.observe ??= readUint(value); break;
        case Option.SIZE2: exchange.wantsSize2 = true; break;
        case Option.NO_RESPONSE: exchange.noResponse = readUint(value); break;
        case Option.BLOCK1:
        case Option.BLOCK2: {
          const block = decodeBlock(value);
          if (block === null) return { code: Code.BAD_OPTION, reason: 'bad_option', message: `malformed Block option ${number}` };
          if (number === Option.BLOCK1) exchange.block1 ??= block;
          else exchange.block2 ??= block;
          break;
        }
        case Option.PROXY_URI:
        case Option.PROXY_SCHEME:
          return { code: Code.PROXYING_NOT_SUPPORTED, reason: 'proxying_not_supported', message: 'this server is not a proxy' };
        default:
          if (number & 1 && !UNDERSTOOD_CRITICAL.has(number)) {
            return { code: Code.BAD_OPTION, reason: 'bad_option', message: `unsupported critical option ${number}`, reject: true };
          }
      }
    }
    if (exchange.block2 !== null && exchange.block2.szx === 7) {
      return { code: Code.BAD_REQUEST, reason: 'bad_option', message: 'BERT blocks (szx 7) are for CoAP over TCP' };
    }
    return null;
  }

  /** Takes one Block1 block; true when the body is whole and the request can run. */
  private reassemble(exchange: Exchange, now: number): boolean {
    const block = exchange.block1 as NonNullable<Exchange['block1']>;
    const size1 = findOption(exchange.message, Option.SIZE1);
    const outcome = this.uploads.accept(
      exchange.resourceKey, block, exchange.payload, size1 === undefined ? undefined : readUint(size1), now);
    switch (outcome.kind) {
      case 'complete':
        exchange.payload = outcome.body;
        return true;
      case 'continue':
        this.respond(exchange, { code: Code.CONTINUE });
        return false;
      case 'too-large':
        this.tooLarge(exchange, outcome.limit);
        return false;
      case 'incomplete':
        this.fail(exchange, Code.REQUEST_ENTITY_INCOMPLETE, 'block_incomplete', outcome.reason);
        return false;
      case 'bad':
        this.fail(exchange, Code.BAD_REQUEST, 'bad_block', outcome.reason);
        return false;
    }
  }

  private tooLarge(exchange: Exchange, limit: number): void {
    const response = this.formatError(exchange, Code.REQUEST_ENTITY_TOO_LARGE, 'request_too_large',
      `the request body exceeds the ${limit} bytes this server accepts`);
    const options = withOption(response.options ?? [], Option.SIZE1, encodeUint(limit));
    exchange.block1 = null; // no Block1 echo on a refusal
    this.respond(exchange, { ...response, options });
  }

  private serveLinks(exchange: Exchange): void {
    if (exchange.method !== 1) {
      this.fail(exchange, Code.METHOD_NOT_ALLOWED, 'method_not_allowed', '/.well-known/core only answers GET');
      return;
    }
    if (exchange.accept !== undefined && exchange.accept !== LINK_FORMAT) {
      this.fail(exchange, Code.NOT_ACCEPTABLE, 'not_acceptable', `/.well-known/core is only served as link-format (${LINK_FORMAT})`);
      return;
    }
    const links = serializeLinks(filterLinks(this.options.links, exchange.query));
    this.respond(exchange, { code: Code.CONTENT, contentFormat: LINK_FORMAT, payload: Buffer.from(links) });
  }

  private runHandler(exchange: Exchange): void {
    const onError = (error: unknown): void => {
      this.counters.handlerErrors++;
      this.log.error(`CoAP: request handler failed for ${exchange.remote.key}: ${(error as Error)?.stack ?? error}`);
      if (!exchange.answered) this.fail(exchange, Code.INTERNAL_SERVER_ERROR, 'internal_error', 'internal server error');
    };
    try {
      const result = this.handler(exchange);
      if (result !== undefined) result.catch(onError);
    } catch (error) {
      onError(error);
    }
  }

  private fail(exchange: Exchange, code: number, reason: string, message: string): void {
    this.respond(exchange, this.formatError(exchange, code, reason, message));
  }

  // ---- answering -------------------------------------------------------

  respond(exchange: Exchange, response: CoapResponse): void {
    if (exchange.answered || this.socket === null) return;
    exchange.answered = true;
    this.awaitingAck.delete(exchange.key);
    this.deliver(exchange, response);
  }

  /** Registers the relation an `Observe: 0` request asks for; null when the bound on relations is reached. */
  registerObservation(exchange: Exchange): Observation | null {
    const szx = exchange.block2 === null ? null : exchange.block2.szx;
    return this.observers.register(exchange.remote, exchange.token, exchange.resourceKey, exchange.confirmable, szx, exchange.receivedAt);
  }

  sendNotification(relation: Observation, response: CoapResponse, sequence: number | null, confirmable: boolean, onDone: ((outcome: Outcome) => void) | undefined): number {
    const szx = relation.szx === null ? this.preferredSzx : Math.min(relation.szx, this.preferredSzx);
    const extra = sequence === null ? response.options ?? [] : withOption(response.options ?? [], Option.OBSERVE, encodeUint(sequence));
    const framed = this.frame(response, extra, relation, szx, 0, false, Date.now()) as Framed;
    const build = (id: number): Buffer => encodeMessage(confirmable ? Type.CON : Type.NON, framed.code, id, relation.token, framed.options, framed.payload);
    if (confirmable) return this.sendConfirmable(relation.remote, build, onDone);
    return this.sendNonConfirmable(relation.remote, build);
  }

  private deliver(exchange: Exchange, response: CoapResponse): void {
    let extra = response.options ?? [];
    if (exchange.block1 !== null) {
      extra = withOption(extra, Option.BLOCK1, encodeBlock(exchange.block1.num, response.code === Code.CONTINUE, exchange.block1.szx));
    }
    const relation = exchange.observation;
    if (relation !== null) {
      // A relation is established by a 2.xx answer only (RFC 7641 §3.2).
      if (response.code >> 5 === 2 && !relation.ended) extra = withOption(extra, Option.OBSERVE, encodeUint(relation.nextSequence()));
      else this.observers.end(relation, 'ended');
    }
    const framed = this.frame(response, extra, exchange, this.szxFor(exchange), exchange.block2?.num ?? 0, exchange.wantsSize2, exchange.receivedAt);
    this.transmit(exchange, framed ?? this.pastTheEnd(exchange));
  }

  /** 4.02 for a block past the end: sent whole, never stored, so the body being fetched stays. */
  private pastTheEnd(exchange: Exchange): Framed {
    const response = this.formatError(exchange, Code.BAD_OPTION, 'bad_block', `block ${exchange.block2?.num} is past the end of the body`);
    return { code: response.code, options: withContentFormat(response.options ?? [], response.contentFormat), payload: response.payload ?? EMPTY };
  }

  private szxFor(exchange: Exchange): number {
    return exchange.block2 === null ? this.preferredSzx : Math.min(exchange.block2.szx, this.preferredSzx);
  }

  /**
   * The wire form of an answer: with its Content-Format and, when it does not
   * fit one block (or a later block is asked for), block `num` of the body,
   * stored under the resource's key for the blocks that follow (the key is
   * only built then). Null when `num` is past the end.
   */
  private frame(response: CoapResponse, extra: readonly CoapOption[], resource: { readonly resourceKey: string }, szx: number, num: number, wantsSize2: boolean, now: number): Framed | null {
    const payload = response.payload ?? EMPTY;
    if (payload.length <= blockSize(szx) && num === 0) {
      return { code: response.code, options: withContentFormat(extra, response.contentFormat), payload };
    }
    return blockOf(this.bodies.store(resource.resourceKey, response.code, response.contentFormat, payload, now), extra, num, szx, wantsSize2);
  }

  /** Puts an answer on the wire: piggybacked, separate CON, or NON; honours No-Response. */
  private transmit(exchange: Exchange, { code, options, payload }: Framed): void {
    const { message, remote, token } = exchange;
    const suppressed = (exchange.noResponse & (NO_RESPONSE_BITS[code >> 5] ?? 0)) !== 0;
    if (message.type === Type.CON && !exchange.acknowledged) {
      const answer = suppressed
        ? encodeMessage(Type.ACK, Code.EMPTY, message.messageId, EMPTY, [], null)
        : encodeMessage(Type.ACK, code, message.messageId, token, options, payload);
      this.dedup.answered(exchange.key, answer);
      this.send(answer, remote);
      return;
    }
    if (suppressed) return;
    if (message.type === Type.CON) {
      this.sendConfirmable(remote, (id) => encodeMessage(Type.CON, code, id, token, options, payload), (outcome) => {
        if (outcome === 'timeout') this.log.debug(`CoAP: separate response to ${remote.key} was never acknowledged`);
      });
    } else {
      this.sendNonConfirmable(remote, (id) => encodeMessage(Type.NON, code, id, token, options, payload));
    }
  }

  /** Empty ACK: the answer will follow as a separate response. */
  private acknowledge(exchange: Exchange): void {
    this.awaitingAck.delete(exchange.key);
    if (exchange.acknowledged || exchange.answered) return;
    exchange.acknowledged = true;
    const ack = encodeMessage(Type.ACK, Code.EMPTY, exchange.message.messageId, EMPTY, [], null);
    this.dedup.answered(exchange.key, ack);
    this.send(ack, exchange.remote);
  }

  /** The periodic tick runs completion callbacks of its own and of the layers above: a fault in one waits for the next tick, never escapes. */
  private tick(now: number): void {
    try {
      this.runTick(now);
    } catch (error) {
      this.counters.tickErrors++;
      this.log.error(`CoAP: error in the periodic tick: ${(error as Error)?.stack ?? error}`);
    }
  }

  private runTick(now: number): void {
    const deadline = now - this.options.piggybackWindowMs;
    for (const exchange of this.awaitingAck.values()) {
      if (exchange.receivedAt > deadline) break;
      this.acknowledge(exchange);
    }
    this.retransmitter.due(now);
    if (now - this.lastSweep >= 1000) {
      this.lastSweep = now;
      this.dedup.sweep(now);
      this.uploads.sweep(now);
      this.bodies.sweep(now);
      this.reportDrops();
    }
  }

  /** Tells operators, once a second at most, that full notification queues dropped notifications. */
  private reportDrops(): void {
    const { dropped, queued } = this.observers.stats;
    if (dropped === this.droppedLogged) return;
    this.log.info(`CoAP: ${dropped - this.droppedLogged} notification(s) dropped by full per-device queues (${dropped} in all, ${queued} queued now)`);
    this.droppedLogged = dropped;
  }

  /** The endpoint's next message ID that no CON still in flight to it uses: a wrap must not overwrite one. */
  private allocateMessageId(to: Remote): number {
    return this.messageIds.allocate(to.key, (id) => this.retransmitter.size > 0 && this.retransmitter.has(messageKey(to, id)));
  }

  /**
   * Sends one datagram. The address comes from the network: whatever the socket refuses, at once
   * (a bad port or address throws) or later (its callback's error), is counted and logged, never thrown.
   */
  private send(datagram: Buffer, to: { address: string; port: number }): void {
    const socket = this.socket;
    if (socket === null) return;
    try {
      socket.send(datagram, to.port, to.address, this.onSent);
    } catch (error) {
      this.sendFailed(error, to);
    }
  }

  private readonly onSent = (error: Error | null): void => {
    if (error) this.sendFailed(error, null);
  };

  private sendFailed(error: unknown, to: { address: string; port: number } | null): void {
    this.counters.sendErrors++;
    const where = to === null ? '' : ` to ${to.address}:${to.port}`;
    this.log.debug(`CoAP: a datagram could not be sent${where}: ${(error as Error)?.message ?? error}`);
  }
}
