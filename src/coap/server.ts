/**
 * A CoAP server on one UDP socket (RFC 7252, 7959, 7641, 6690, 7967, 9175),
 * assembled from its layers, bottom to top:
 * - the message layer (messageLayer.ts): peers, deduplication, ACKs,
 *   separate responses, retransmission, amplification limit;
 * - the block-wise layer (blockwiseLayer.ts): Block1 reassembly, Block2
 *   framing and stored bodies;
 * - resource dispatch (resources.ts): deregistration, `/.well-known/core`,
 *   the application's handler;
 * - beside them, observe relations (observe.ts).
 * A request goes up once; its answer (`Responder.respond`) comes down once.
 * This module owns only the periodic tick and the assembly; datagrams come and
 * go through a DatagramSocket (datagramSocket.ts: UDP; src/dtls: DTLS).
 *
 * Time is driven by one periodic tick on a monotonic clock, not by timers per message.
 */
import type { AmplificationOptions } from './amplification';
import { BlockwiseLayer } from './blockwiseLayer';
import type { StoreLimits } from './boundedStore';
import { now } from './clock';
import { Option, Type } from './constants';
import type { DatagramSocket, Source } from './datagramSocket';
import type { DeduplicationLimits } from './deduplication';
import type { CoapResponse, Exchange, Remote, Responder } from './exchange';
import type { Link } from './linkFormat';
import { CoapOption, encodeMessage, encodeUint, withOption } from './message';
import { ErrorFormatter, MessageLayer, TransportLogger } from './messageLayer';
import { NotificationWire, Observation, ObserveLayer, ObserveOptions } from './observe';
import type { Peer } from './peer';
import { RequestHandler, ResourceLayer } from './resources';
import type { OnSettled, RetransmissionParameters } from './retransmission';

export type { ErrorFormatter, TransportLogger } from './messageLayer';
export type { RequestHandler } from './resources';

export interface TransportOptions {
  /** How long a CON request may wait for its answer to ride on the ACK. */
  piggybackWindowMs: number;
  maxTokenLength: number;
  /** Preferred Block2 size (16..1024, a power of two). */
  blockSize: number;
  /** Largest request body, whole or reassembled, in bytes. */
  maxBodySize: () => number;
  /** Remote endpoints the server keeps state for. */
  maxPeers: number;
  /** A peer that holds nothing is forgotten after this long without a datagram. */
  peerIdleMs: number;
  deduplication: DeduplicationLimits & { lifetimeMs: number };
  blockwise: StoreLimits;
  retransmission: RetransmissionParameters;
  amplification: AmplificationOptions;
  observe: ObserveOptions;
  tickMs: number;
  links: readonly Link[];
}

export const diagnosticError: ErrorFormatter = (_exchange, code, _reason, message) => ({
  code,
  payload: Buffer.from(message),
});

const SWEEP_EVERY_MS = 1000;

export class CoapServer implements Responder, NotificationWire {
  private ticker: NodeJS.Timeout | null = null;
  private lastSweep = 0;
  private droppedLogged = 0;
  private readonly message: MessageLayer;
  private readonly blocks: BlockwiseLayer;
  private readonly resources: ResourceLayer;
  private readonly observers: ObserveLayer;
  /** The Max-Age option value of registration answers and notifications; null when off. */
  private readonly maxAge: Buffer | null;
  private readonly counters = { receiveErrors: 0, tickErrors: 0 };

  constructor(
    private readonly socket: DatagramSocket,
    private readonly options: TransportOptions,
    handler: RequestHandler,
    private readonly log: TransportLogger,
    formatError: ErrorFormatter = diagnosticError,
    /** A DTLS session ended: the application forgets what it keeps for that endpoint. */
    onSessionEnded: (remote: Remote) => void = () => {},
  ) {
    this.observers = new ObserveLayer(options.observe, this);
    this.maxAge = options.observe.maxAge === 0 ? null : encodeUint(options.observe.maxAge);
    this.message = new MessageLayer(options, {
      request: (exchange) => this.blocks.request(exchange),
      reset: (peer, messageId) => this.observers.reset(peer, messageId),
      dropped: (peer) => this.observers.endPeer(peer, 'dropped'),
      ended: (peer) => onSessionEnded(peer),
    }, this, log, formatError);
    this.blocks = new BlockwiseLayer(options, {
      request: (exchange) => this.resources.request(exchange),
      transmit: (exchange, framed, whole) => this.message.transmit(exchange, framed, whole),
      separateBudget: (exchange) => this.message.separateBudget(exchange),
    }, formatError);
    this.resources = new ResourceLayer(options.links, this.observers, (exchange) => this.message.guarded(exchange), handler, formatError, log);
  }

  /** Resolves once the socket listens; rejects with a readable reason (port in use, bad address). */
  async listen(): Promise<{ address: string; port: number }> {
    this.message.attach(this.socket);
    const bound = await this.socket.open({
      datagram: (datagram, from) => this.receive(datagram, from),
      ended: (source) => this.message.endPeer(source),
    });
    this.ticker = setInterval(() => this.tick(), this.options.tickMs);
    this.ticker.unref();
    return bound;
  }

  close(): Promise<void> {
    if (this.ticker !== null) clearInterval(this.ticker);
    this.ticker = null;
    this.observers.endAll('closed');
    this.message.close();
    this.blocks.clear();
    return this.socket.close();
  }

  get stats(): Record<string, unknown> {
    return {
      ...this.message.stats,
      ...this.resources.stats,
      ...this.counters,
      ...this.blocks.stats,
      observe: this.observers.stats,
      ...this.socket.stats,
    };
  }

  /** A datagram from the network: a bug of ours while handling it costs that datagram, never the process. */
  private receive(datagram: Buffer, from: Source): void {
    try {
      this.message.receive(datagram, from);
    } catch (error) {
      this.counters.receiveErrors++;
      this.log.error(`CoAP: error while handling a datagram from ${from.address}:${from.port}: ${(error as Error)?.stack ?? error}`);
    }
  }

  // ---- answering (Responder, NotificationWire) -------------------------

  respond(exchange: Exchange, response: CoapResponse): void {
    if (exchange.answered || this.ticker === null) return;
    exchange.answered = true;
    let extra = response.options ?? [];
    const relation = exchange.observation;
    if (relation !== null) {
      // A relation is established by a 2.xx answer only (RFC 7641 §3.2).
      if (response.code >> 5 === 2 && !relation.ended) extra = this.observing(extra, relation.nextSequence());
      else this.observers.end(relation, 'ended');
      this.observers.registered(relation);
    }
    this.blocks.answer(exchange, response, extra);
  }

  challenge(exchange: Exchange): void {
    if (exchange.answered || this.ticker === null) return;
    this.message.challenge(exchange);
  }

  /** Registers the relation an `Observe: 0` request asks for; null when a bound on relations is reached. */
  registerObservation(exchange: Exchange): Observation | null {
    const szx = exchange.block2 === null ? null : exchange.block2.szx;
    return this.observers.register(exchange.peer, exchange.token, exchange.resourceKey, exchange.confirmable, szx, exchange.receivedAt);
  }

  /** The options of a registration answer or notification: its Observe number and the relation's Max-Age. */
  private observing(options: readonly CoapOption[], sequence: number): readonly CoapOption[] {
    const observing = withOption(options, Option.OBSERVE, encodeUint(sequence));
    return this.maxAge === null ? observing : withOption(observing, Option.MAX_AGE, this.maxAge);
  }

  findObservation(exchange: Exchange): Observation | undefined {
    return this.observers.find(exchange.remote, exchange.token);
  }

  sendNotification(relation: Observation, response: CoapResponse, sequence: number | null, confirmable: boolean, onDone: OnSettled | undefined): number {
    const extra = sequence === null ? response.options ?? [] : this.observing(response.options ?? [], sequence);
    const { code, options, payload } = this.blocks.notification(response, extra, relation, relation.szx);
    const datagram = encodeMessage(confirmable ? Type.CON : Type.NON, code, 0, relation.token, options, payload);
    if (confirmable) return this.message.sendConfirmable(relation.peer, datagram, onDone);
    return this.message.sendNonConfirmable(relation.peer, datagram);
  }

  cancelNotification(peer: Peer, messageId: number): void {
    this.message.cancelConfirmable(peer, messageId);
  }

  canConfirm(peer: Peer): boolean {
    return this.message.canConfirm(peer);
  }

  // ---- time ------------------------------------------------------------

  /** The periodic tick runs completion callbacks of its own and of the layers above: a fault in one waits for the next tick, never escapes. */
  private tick(): void {
    try {
      const at = now();
      this.message.tick(at);
      this.observers.tick(at);
      if (at - this.lastSweep >= SWEEP_EVERY_MS) {
        this.lastSweep = at;
        this.message.sweep(at);
        this.observers.heartbeats(at);
        this.blocks.sweep(at);
        this.reportDrops();
      }
    } catch (error) {
      this.counters.tickErrors++;
      this.log.error(`CoAP: error in the periodic tick: ${(error as Error)?.stack ?? error}`);
    }
  }

  /** Tells operators, once a second at most, that full notification queues dropped notifications. */
  private reportDrops(): void {
    const { dropped, queued } = this.observers.stats;
    if (dropped === this.droppedLogged) return;
    this.log.info(`CoAP: ${dropped - this.droppedLogged} notification(s) dropped by full per-device queues (${dropped} in all, ${queued} queued now)`);
    this.droppedLogged = dropped;
  }
}
