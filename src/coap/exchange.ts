/**
 * One request as the application sees it, and the way to answer it exactly
 * once. The transport decodes the options the application needs (path, query,
 * formats, Observe) in one pass; how the answer travels (piggybacked, separate,
 * block-wise, suppressed by No-Response) is the transport's business.
 */
import type { Block } from './blockwise';
import type { CoapMessage, CoapOption } from './message';
import type { Observation } from './observe';
import type { Peer } from './peer';

export interface Remote {
  readonly address: string;
  readonly port: number;
  readonly family: 'IPv4' | 'IPv6';
  /** "address|port": names the endpoint in every per-endpoint map. */
  readonly key: string;
}

export interface CoapResponse {
  code: number;
  contentFormat?: number;
  payload?: Buffer;
  /** Extra options, in ascending number order (e.g. Observe, Max-Age). */
  options?: readonly CoapOption[];
}

export interface Responder {
  respond(exchange: Exchange, response: CoapResponse): void;
  registerObservation(exchange: Exchange): Observation | null;
  /** The live relation of the exchange's endpoint and token, if any. */
  findObservation(exchange: Exchange): Observation | undefined;
  /** Answers 4.01 with an Echo value (RFC 9175): repeated with it, the request comes from a verified peer. */
  challenge(exchange: Exchange): void;
}

export class Exchange {
  // What the application reads.
  readonly path: string[] = [];
  readonly query: string[] = [];
  contentFormat: number | undefined = undefined;
  accept: number | undefined = undefined;
  observe: number | undefined = undefined;
  /** Whole request body: Block1 uploads are reassembled before the application sees them. */
  payload: Buffer;

  // What the transport keeps to answer.
  /** The empty ACK went out: the response will be a separate CON. */
  acknowledged = false;
  answered = false;
  block1: Block | null = null;
  block2: Block | null = null;
  wantsSize2 = false;
  /** No-Response (RFC 7967) mask of response classes not to send. */
  noResponse = 0;
  /** The relation this request registered, once the application accepted it. */
  observation: Observation | null = null;
  /** The Echo option (RFC 9175) the request carries. */
  echo: Buffer | null = null;
  /** That Echo value is fresh and was issued to this address: the request comes from who receives there. */
  echoValid = false;
  /** Bytes sent to the peer for this exchange so far, retransmissions planned included (amplification budget). */
  bytesOut = 0;

  constructor(
    private readonly responder: Responder,
    readonly message: CoapMessage,
    readonly peer: Peer,
    /** Transport time (monotonic ms). */
    readonly receivedAt: number,
    /** Endpoint + message ID: the deduplication key. */
    readonly key: string,
    /** Size of the request's datagram: an unverified peer is sent a bounded multiple of it. */
    readonly bytesIn: number,
  ) {
    this.payload = message.payload;
  }

  get remote(): Remote {
    return this.peer.remote;
  }

  /** The peer has shown that it receives at its address (Echo, an ACK of ours, later DTLS). */
  get verified(): boolean {
    return this.peer.verified;
  }

  get method(): number {
    return this.message.code;
  }

  get confirmable(): boolean {
    return this.message.type === 0;
  }

  get token(): Buffer {
    return this.message.token;
  }

  /** Names a resource for one endpoint across requests: block-wise transfers are keyed by it. */
  get resourceKey(): string {
    return `${this.remote.key}|${this.method}|${this.path.join('/')}?${this.query.join('&')}`;
  }

  respond(response: CoapResponse): void {
    this.responder.respond(this, response);
  }

  /**
   * True when this request carries a fresh Echo value issued to its address. Otherwise answers
   * 4.01 with one and returns false: a client that repeats the request with it (libcoap's do)
   * passes then. For what only the sender who receives at the address may do, even when the
   * address was verified before: anyone can send a datagram from a verified address.
   */
  requireEcho(): boolean {
    if (this.echoValid) return true;
    if (!this.answered) this.responder.challenge(this);
    return false;
  }

  /**
   * Accepts the `Observe: 0` registration of this request: the answer, if
   * 2.xx, carries the Observe option and later notifications go out on the
   * returned relation. Null when the server holds as many relations as allowed.
   */
  acceptObservation(): Observation | null {
    this.observation ??= this.responder.registerObservation(this);
    return this.observation;
  }

  /** The relation this request's token already has at its endpoint (RFC 7641 §4.1 re-registration). */
  currentObservation(): Observation | undefined {
    return this.responder.findObservation(this);
  }

  /**
   * Answers this re-registration on `relation` (from currentObservation) instead of a new one: a
   * 2.xx answer carries its next Observe number, anything else ends it.
   */
  renewObservation(relation: Observation): void {
    this.observation = relation;
  }
}
