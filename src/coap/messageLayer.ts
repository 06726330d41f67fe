/**
 * The message layer (RFC 7252 §4) of the server. It owns:
 * - the peers (peer.ts): one per remote endpoint, with its message IDs, its
 *   CONs in flight and whether it is verified;
 * - receiving: unanswerable sources, malformed datagrams, ACK and RST of our
 *   CONs, pings, request options and their refusals, Echo values;
 * - deduplication of requests and the replay of their answers;
 * - how an answer travels: piggybacked on the ACK within `piggybackWindowMs`,
 *   else an empty ACK and a separate response; CONs retransmitted;
 * - the amplification limit towards unverified peers (amplification.ts);
 * - the socket's sends, which never throw.
 * It does not own what requests mean: block-wise transfers, resources and
 * observe relations are the layers above. A new request goes up once, as an
 * Exchange; its answer comes down once, framed, to `transmit`.
 */
import { Amplification, AmplificationOptions } from './amplification';
import { now } from './clock';
import type { Framed } from './blockwise';
import type { DatagramSocket, Source } from './datagramSocket';
import { Code, MessageType, NO_RESPONSE_BITS, Option, Type } from './constants';
import { Deduplicator, DeduplicationLimits } from './deduplication';
import { CoapResponse, Exchange, Remote, Responder } from './exchange';
import { CoapMessage, decodeMessage, encodeMessage, withContentFormat, withOption } from './message';
import { Peer, Peers } from './peer';
import { readOptions } from './requestOptions';
import { RetransmissionParameters, OnSettled, Retransmitter } from './retransmission';
import { unanswerableSource } from './sourceAddress';

export interface TransportLogger {
  debug(message: string): void;
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
}

/** Lets the application give transport errors its own body shape. */
export type ErrorFormatter = (exchange: Exchange, code: number, reason: string, message: string) => CoapResponse;

export interface MessageLayerOptions {
  /** How long a CON request may wait for its answer to ride on the ACK. */
  piggybackWindowMs: number;
  maxTokenLength: number;
  /** Remote endpoints kept (peer.ts). */
  maxPeers: number;
  /** A peer that holds nothing is forgotten after this long without a datagram. */
  peerIdleMs: number;
  deduplication: DeduplicationLimits & { lifetimeMs: number };
  retransmission: RetransmissionParameters;
  amplification: AmplificationOptions;
}

/** What the message layer tells the layers above. */
export interface MessageEvents {
  /** A new request, its options read: it goes up, to be answered through `Responder.respond`. */
  request(exchange: Exchange): void;
  /** An RST that answers no CON of ours: maybe a NON notification the peer refuses. */
  reset(peer: Peer, messageId: number): void;
  /** A peer was forgotten: what the layers above hold for it ends. */
  dropped(peer: Peer): void;
  /** The DTLS session of a peer ended: it will never be heard from again. */
  ended(peer: Peer): void;
}

const EMPTY = Buffer.alloc(0);

/** Names a message ID of one endpoint: deduplication and retransmission are keyed by it. */
function messageKey(remote: Remote, messageId: number): string {
  return `${remote.key}#${messageId}`;
}

/** Writes a message's type and ID into its encoded header; returns the ID. */
function stamp(datagram: Buffer, type: MessageType, messageId: number): number {
  datagram[0] = (datagram[0] & 0xcf) | (type << 4);
  datagram.writeUInt16BE(messageId, 2);
  return messageId;
}

function emptyMessage(type: MessageType, messageId: number): Buffer {
  return encodeMessage(type, Code.EMPTY, messageId, EMPTY, [], null);
}

export class MessageLayer {
  private socket: DatagramSocket | null = null;
  private readonly peers: Peers;
  private readonly dedup: Deduplicator;
  private readonly retransmitter: Retransmitter;
  private readonly amplification: Amplification;
  /** CON requests still inside their piggyback window, oldest first, by deduplication key. */
  private readonly awaitingAck = new Map<string, Exchange>();
  private readonly counters = { received: 0, badSource: 0, malformed: 0, duplicates: 0, rejected: 0, sendErrors: 0 };

  constructor(
    private readonly options: MessageLayerOptions,
    private readonly up: MessageEvents,
    private readonly responder: Responder,
    private readonly log: TransportLogger,
    private readonly formatError: ErrorFormatter,
  ) {
    this.peers = new Peers(options.maxPeers, (peer) => this.forget(peer));
    this.dedup = new Deduplicator(options.deduplication, options.deduplication.lifetimeMs);
    this.retransmitter = new Retransmitter(options.retransmission, (datagram, to) => this.send(datagram, to));
    this.amplification = new Amplification(options.amplification);
  }

  attach(socket: DatagramSocket | null): void {
    this.socket = socket;
  }

  get stats(): Record<string, unknown> {
    return {
      ...this.counters,
      peers: this.peers.stats,
      deduplication: this.dedup.stats,
      awaitingAck: this.awaitingAck.size,
      retransmitting: this.retransmitter.size,
      amplification: this.amplification.stats,
    };
  }

  /** Whether a CON to this peer can be tracked now; past the bounds, what would be a CON goes as a NON. */
  canConfirm(peer: Peer): boolean {
    const { maxInFlight, maxInFlightPerPeer } = this.options.retransmission;
    return this.retransmitter.size < maxInFlight && peer.inFlight.size < maxInFlightPerPeer;
  }

  // ---- receiving -------------------------------------------------------

  receive(datagram: Buffer, rinfo: Source): void {
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
    if (message.type === Type.ACK || message.type === Type.RST) this.settle(message, rinfo.key);
    else this.request(message, datagram.length, rinfo);
  }

  private rejectMalformed(datagram: Buffer, rinfo: Source, why: string): void {
    this.counters.malformed++;
    this.log.debug(`CoAP: dropped a malformed datagram of ${datagram.length} bytes from ${rinfo.address}:${rinfo.port}: ${why}`);
    // RFC 7252 §4.2: a CON that cannot be processed is rejected with a RST, when its header can be read.
    if (datagram.length >= 4 && datagram[0] >> 6 === 1 && ((datagram[0] >> 4) & 3) === Type.CON) {
      this.send(emptyMessage(Type.RST, datagram.readUInt16BE(2)), rinfo);
    }
  }

  /**
   * An ACK or RST that settles a CON of ours. Only an ACK verifies the peer: a CoAP stack answers
   * any CON it did not expect with an RST, so a victim of spoofed requests that runs one would
   * otherwise verify itself and be sent everything.
   */
  private settle(message: CoapMessage, key: string): void {
    const peer = this.peers.get(key);
    if (peer === undefined) return;
    const reset = message.type === Type.RST;
    const ours = messageKey(peer.remote, message.messageId);
    if (this.retransmitter.has(ours)) {
      // Verified before the CON's owner hears of it: what it sends next is not held to the budget.
      if (!reset) this.peers.verify(peer);
      const at = now();
      peer.lastSeen = at;
      this.retransmitter.settle(ours, reset ? 'reset' : 'acked', at);
    } else if (reset) {
      this.up.reset(peer, message.messageId);
    }
  }

  private request(message: CoapMessage, size: number, rinfo: Source): void {
    const { type, code } = message;
    const at = now();
    const peer = this.peers.heard(rinfo, at);
    // A DTLS handshake proved the address (its cookie exchange): nothing to verify.
    if (rinfo.security !== null) this.peers.verify(peer);
    if (code === Code.EMPTY || code >> 5 !== 0 || message.token.length > this.options.maxTokenLength) {
      // A CON ping, a response where a request belongs or a token we will not keep: RST (RFC 7252 §4.2, RFC 8974 §2.2).
      if (type === Type.CON) this.send(emptyMessage(Type.RST, message.messageId), peer.remote);
      return;
    }
    const dedupKey = messageKey(peer.remote, message.messageId);
    const seen = this.dedup.check(dedupKey, peer.verified, at);
    if (seen.state !== 'new') {
      this.counters.duplicates++;
      if (type === Type.CON) this.answerDuplicate(dedupKey, seen.state === 'answered' ? seen.answer : null, message, peer);
      return;
    }
    const exchange = new Exchange(this.responder, message, peer, at, dedupKey, size);
    if (type === Type.CON) this.awaitingAck.set(dedupKey, exchange);
    const problem = readOptions(exchange);
    if (problem !== null) {
      if (problem.reject === true && type === Type.NON) {
        // Rejecting a NON (RFC 7252 §4.3) is an RST at most: no response for a message not understood.
        this.counters.rejected++;
        this.awaitingAck.delete(dedupKey);
        this.send(emptyMessage(Type.RST, message.messageId), peer.remote);
        return;
      }
      this.fail(exchange, problem.code, problem.reason, problem.message);
      return;
    }
    if (exchange.echo !== null && this.verifyEcho(exchange)) return;
    this.up.request(exchange);
  }

  /** A returned Echo value verifies the peer; true when the request was answered here (a withheld answer). */
  private verifyEcho(exchange: Exchange): boolean {
    const check = this.amplification.checkEcho(exchange);
    if (!check.valid) return false;
    exchange.echoValid = true;
    this.peers.verify(exchange.peer);
    // A later block is served from the stored body (node-coap repeats the Echo value on every block).
    if (!check.withheld || (exchange.block2 !== null && exchange.block2.num > 0)) return false;
    const replay = this.amplification.replay(exchange, exchange.receivedAt);
    if (replay.kind === 'answer') {
      // Down through the layers as any answer: framed for this request (its blocks stored for it).
      this.responder.respond(exchange, replay.answer);
      return true;
    }
    if (replay.kind === 'lost') {
      // It ran once already: running it again could, for a POST, create a second document.
      this.fail(exchange, Code.SERVICE_UNAVAILABLE, 'answer_expired',
        'this request was executed but its answer, withheld until your address was verified, has expired; it is not run twice');
      return true;
    }
    return false;
  }

  private answerDuplicate(key: string, answer: Buffer | null, message: CoapMessage, peer: Peer): void {
    if (answer !== null) {
      this.send(answer, peer.remote);
      return;
    }
    // Still being processed: acknowledge now so the client stops retransmitting; the answer will be separate.
    const exchange = this.awaitingAck.get(key);
    if (exchange !== undefined) this.acknowledge(exchange);
    else this.send(emptyMessage(Type.ACK, message.messageId), peer.remote);
  }

  private fail(exchange: Exchange, code: number, reason: string, message: string): void {
    this.responder.respond(exchange, this.formatError(exchange, code, reason, message));
  }

  // ---- answering -------------------------------------------------------

  /**
   * Puts the answer to a request on the wire, once: piggybacked, separate CON, or NON; honours
   * No-Response. To an unverified peer, an answer over its budget is withheld behind a challenge:
   * `whole`, the answer `framed` is (a block of), is kept for the request's repetition (null: a
   * block of a stored body, served from there again; its ETag must not change).
   */
  transmit(exchange: Exchange, framed: Framed, whole: CoapResponse | null): void {
    if (this.socket === null) return;
    this.awaitingAck.delete(exchange.key);
    const { message } = exchange;
    const type = this.answerType(exchange);
    const suppressed = (exchange.noResponse & (NO_RESPONSE_BITS[framed.code >> 5] ?? 0)) !== 0;
    if (suppressed) {
      if (type === Type.ACK) this.piggyback(exchange, emptyMessage(Type.ACK, message.messageId));
      return;
    }
    let datagram: Buffer | null = encodeMessage(type, framed.code, message.messageId, message.token, framed.options, framed.payload);
    if (this.guarded(exchange) && this.amplification.allowance(exchange, datagram.length) < 1) {
      datagram = this.challengeDatagram(exchange, whole, type);
    }
    this.put(exchange, type, datagram);
  }

  /** Answers 4.01 with a fresh Echo value, within the budget (for what only a verified peer may do). */
  challenge(exchange: Exchange): void {
    if (this.socket === null) return;
    exchange.answered = true;
    this.awaitingAck.delete(exchange.key);
    const type = this.answerType(exchange);
    this.put(exchange, type, this.challengeDatagram(exchange, null, type));
  }

  /**
   * How an answer travels: on the ACK of a CON not yet acknowledged, else as a CON (a NON past
   * the bounds on CONs in flight), or as a NON for a NON request.
   */
  private answerType(exchange: Exchange): MessageType {
    if (exchange.message.type !== Type.CON) return Type.NON;
    if (!exchange.acknowledged) return Type.ACK;
    return this.canConfirm(exchange.peer) ? Type.CON : Type.NON;
  }

  /**
   * Bytes left for a separate answer (a CON) to an unverified peer; null when no limit applies or
   * the answer will not be a separate CON. Such an answer is acknowledged, which verifies the peer:
   * the block-wise layer sends a first block that fits, and the peer fetches the rest verified.
   */
  separateBudget(exchange: Exchange): number | null {
    if (!this.guarded(exchange) || this.answerType(exchange) !== Type.CON) return null;
    return this.amplification.remaining(exchange);
  }

  /** Whether the exchange's answers count against the amplification budget: its peer is not verified yet. */
  guarded(exchange: Exchange): boolean {
    return this.amplification.enabled && !exchange.peer.verified;
  }

  /**
   * 4.01 with an Echo value, and its diagnostic when that fits the budget; null when not even the
   * bare challenge fits. With `withheld`, that answer is kept for the request's repetition.
   */
  private challengeDatagram(exchange: Exchange, withheld: CoapResponse | null, type: MessageType): Buffer | null {
    const echo = this.amplification.challenge(exchange, withheld, now());
    const { messageId, token } = exchange.message;
    const error = this.formatError(exchange, Code.UNAUTHORIZED, 'echo_required',
      'repeat this request with the Echo option of this response: this address is not verified yet (RFC 9175)');
    const options = withOption(error.options ?? [], Option.ECHO, echo);
    const full = encodeMessage(type, Code.UNAUTHORIZED, messageId, token, withContentFormat(options, error.contentFormat), error.payload ?? EMPTY);
    if (!this.guarded(exchange) || this.amplification.allowance(exchange, full.length) >= 1) return full;
    const bare = encodeMessage(type, Code.UNAUTHORIZED, messageId, token, [{ number: Option.ECHO, value: echo }], EMPTY);
    if (this.amplification.allowance(exchange, bare.length) >= 1) return bare;
    this.amplification.silenced();
    return null;
  }

  /** Sends an answer datagram of `type`; null: nothing fits the budget (a CON request still gets its empty ACK). */
  private put(exchange: Exchange, type: MessageType, datagram: Buffer | null): void {
    const { message, peer } = exchange;
    if (datagram === null) {
      if (type === Type.ACK) this.piggyback(exchange, emptyMessage(Type.ACK, message.messageId));
      return;
    }
    if (type === Type.ACK) {
      this.piggyback(exchange, datagram);
      return;
    }
    if (type === Type.NON) {
      exchange.bytesOut += datagram.length;
      this.sendNonConfirmable(peer, datagram);
      return;
    }
    // A separate CON: to an unverified peer, only as many transmissions as its budget allows.
    const transmissions = this.guarded(exchange)
      ? this.amplification.allowance(exchange, datagram.length)
      : 1 + this.options.retransmission.maxRetransmit;
    exchange.bytesOut += datagram.length * transmissions;
    const { remote } = peer;
    this.sendConfirmable(peer, datagram, (outcome) => {
      if (outcome === 'timeout') this.log.debug(`CoAP: separate response to ${remote.key} was never acknowledged`);
    }, transmissions - 1);
  }

  private piggyback(exchange: Exchange, datagram: Buffer): void {
    exchange.bytesOut += datagram.length;
    this.dedup.answered(exchange.key, datagram);
    this.send(datagram, exchange.remote);
  }

  /** Empty ACK: the answer will follow as a separate response. */
  private acknowledge(exchange: Exchange): void {
    this.awaitingAck.delete(exchange.key);
    if (exchange.acknowledged || exchange.answered) return;
    exchange.acknowledged = true;
    this.piggyback(exchange, emptyMessage(Type.ACK, exchange.message.messageId));
  }

  /**
   * Sends a CON to a peer under its next message ID (written into `datagram`) and retransmits it
   * until it is acknowledged, reset or given up after `limit` retransmissions at most.
   */
  sendConfirmable(peer: Peer, datagram: Buffer, onDone?: OnSettled, limit = Infinity): number {
    const id = stamp(datagram, Type.CON, peer.allocateMessageId());
    peer.flying(id);
    this.retransmitter.start(messageKey(peer.remote, id), datagram, peer.remote, now(), (outcome, rttMs) => {
      peer.landed(id);
      onDone?.(outcome, rttMs);
    }, limit);
    return id;
  }

  /** Stops retransmitting a CON of ours; its owner hears 'cancelled'. */
  cancelConfirmable(peer: Peer, id: number): void {
    this.retransmitter.cancel(messageKey(peer.remote, id));
  }

  sendNonConfirmable(peer: Peer, datagram: Buffer): number {
    const id = stamp(datagram, Type.NON, peer.allocateMessageId());
    this.send(datagram, peer.remote);
    return id;
  }

  // ---- time ------------------------------------------------------------

  /** Empty ACKs for requests whose piggyback window closed, then retransmissions due. */
  tick(at: number): void {
    const deadline = at - this.options.piggybackWindowMs;
    for (const exchange of this.awaitingAck.values()) {
      if (exchange.receivedAt > deadline) break;
      this.acknowledge(exchange);
    }
    this.retransmitter.due(at);
  }

  sweep(at: number): void {
    this.dedup.sweep(at);
    this.amplification.sweep(at);
    this.peers.sweep(at, this.options.peerIdleMs);
  }

  /** The security association of a source ended: its peer, and what the layers above hold for it, go too. */
  endPeer(source: Source): void {
    const peer = this.peers.get(source.key);
    if (peer === undefined) return;
    this.peers.drop(peer);
    this.up.ended(peer);
  }

  close(): void {
    this.retransmitter.cancelAll();
    this.awaitingAck.clear();
    this.peers.clear();
    this.dedup.clear();
    this.amplification.clear();
    this.socket = null;
  }

  /** A peer dropped from the table: its CONs in flight are cancelled, the layers above end what they hold. */
  private forget(peer: Peer): void {
    for (const id of [...peer.inFlight]) this.retransmitter.cancel(messageKey(peer.remote, id));
    this.up.dropped(peer);
  }

  // ---- sending ---------------------------------------------------------

  /**
   * Sends one datagram. The address comes from the network: whatever the socket refuses, at once
   * (a bad port or address throws) or later (its callback's error), is counted and logged, never thrown.
   */
  private send(datagram: Buffer, to: { address: string; port: number }): void {
    const socket = this.socket;
    if (socket === null) return;
    socket.send(datagram, to, this.onSent);
  }

  private readonly onSent = (error: Error | null): void => {
    if (error) this.sendFailed(error);
  };


  private sendFailed(error: unknown): void {
    this.counters.sendErrors++;
    this.log.debug(`CoAP: a datagram could not be sent: ${(error as Error)?.message ?? error}`);
  }
}
