/**
 * coaps (RFC 7252 §9.1): a DatagramSocket whose datagrams travel inside DTLS
 * 1.2 sessions, one per remote endpoint, over one UDP socket. It owns:
 * - the stateless cookie exchange: ClientHellos go to one shared listener
 *   (DTLSv1_listen), and nothing is kept for an endpoint before it returned a
 *   cookie (HMAC of its address, under a secret that rotates; the previous
 *   secret still verifies);
 * - sessions (session.ts): their handshakes, with a deadline and OpenSSL's
 *   retransmission timer; a cap on sessions and on handshakes under way; idle
 *   expiry; close_notify when one ends here; a new handshake from an
 *   endpoint that already has a session (a device that restarted on the same
 *   port) replaces it;
 * - PSK keys: the identity is read from the ClientKeyExchange in clear and
 *   fetched from the key store before OpenSSL's synchronous callback needs it.
 * The CoAP server above sees decrypted datagrams with the session's identity,
 * and is told when a session ends: what was bound to it ends with it.
 */
import type dgram from 'node:dgram';
import crypto from 'node:crypto';
import { now } from '../coap/clock';
import { DatagramSocket, Security, SocketEvents, bindUdp, closeUdp, familyOf, sendUdp } from '../coap/datagramSocket';
import { unanswerableSource } from '../coap/sourceAddress';
import { DtlsNative, NativeContext, NativeListener, NativeSession, SessionState, loadNative } from './native';
import { clientRandomOf, decodeIdentity, isApplicationData, isClientHello, pskIdentityOf, startsInClear } from './records';
import { DtlsSession, MAX_HELD } from './session';

export interface DtlsOptions {
  host: string;
  port: number;
  receiveBufferSize: number;
  /** OpenSSL cipher list. */
  ciphers: string;
  /** Largest datagram sent, DTLS headers included. */
  mtu: number;
  /** X.509: PEM server certificate chain and key; client certificates verified against `ca`. */
  certificate: Buffer | null;
  privateKey: Buffer | null;
  ca: Buffer | null;
  verifyClient: 'none' | 'optional' | 'require';
  handshakeTimeoutMs: number;
  maxSessions: number;
  maxHandshakes: number;
  sessionIdleMs: number;
  cookieSecretLifetimeMs: number;
}

/** Where pre-shared keys come from. */
export interface KeyStore {
  /** The key of an identity if known now; null: unknown; undefined: not in memory, `fetchPsk` it first. */
  pskOf(identity: string): Buffer | null | undefined;
  fetchPsk(identity: string): Promise<void>;
}

export interface DtlsLogger {
  debug(message: string): void;
  info(message: string): void;
}

const TICK_MS = 100;
const SWEEP_EVERY_MS = 1000;
/** How long close() waits for the close_notify datagrams to leave. */
const CLOSE_FLUSH_MS = 500;

/** OpenSSL's reasons, in the words an operator reads in stats. */
function failureReason(error: string | null): string {
  const text = (error ?? '').toLowerCase();
  if (text.includes('psk identity not found') || text.includes('unknown psk identity')) return 'unknown_identity';
  if (text.includes('no shared cipher')) return 'no_shared_cipher';
  if (text.includes('did not return a certificate') || text.includes('no certificate')) return 'no_certificate';
  if (text.includes('certificate')) return 'bad_certificate';
  if (text.includes('decrypt') || text.includes('bad record mac') || text.includes('digest check')) return 'wrong_key';
  return 'protocol_error';
}

export class DtlsSocket implements DatagramSocket {
  private readonly native: DtlsNative;
  private readonly context: NativeContext;
  private listener: NativeListener;
  private socket: dgram.Socket | null = null;
  private events: SocketEvents | null = null;
  private readonly sessions = new Map<string, DtlsSession>();
  /** Handshakes under way that will replace an established session at the same endpoint. */
  private readonly replacements = new Map<string, DtlsSession>();
  /** Sessions still in their handshake: the tick looks at these only. */
  private readonly handshaking = new Set<DtlsSession>();
  private secret = crypto.randomBytes(32);
  private secretSince = now();
  private ticker: NodeJS.Timeout | null = null;
  private lastSweep = 0;
  /** Numbers the sessions (Security.session). */
  private sessionSerial = 0;
  private readonly counters = {
    cookieRounds: 0,
    handshakesOk: 0,
    handshakesFailed: {} as Record<string, number>,
    refusedFull: 0,
    replaced: 0,
    expired: 0,
    revoked: 0,
    closedByPeer: 0,
    droppedNoSession: 0,
    badSource: 0,
    tooLarge: 0,
  };

  constructor(
    private readonly options: DtlsOptions,
    private readonly keys: KeyStore | null,
    private readonly log: DtlsLogger,
    private readonly onError: (error: Error) => void,
  ) {
    this.native = loadNative();
    this.context = this.native.createContext({
      ciphers: options.ciphers,
      psk: keys !== null,
      mtu: options.mtu,
      verifyClient: options.verifyClient,
      ...(options.certificate === null ? {} : { certificate: options.certificate }),
      ...(options.privateKey === null ? {} : { privateKey: options.privateKey }),
      ...(options.ca === null ? {} : { ca: options.ca }),
    });
    this.native.setCookieSecrets(this.context, this.secret, null);
    this.listener = this.native.createListener(this.context);
  }

  async open(events: SocketEvents): Promise<{ address: string; port: number }> {
    const { host, port, receiveBufferSize } = this.options;
    const socket = await bindUdp(host, port, receiveBufferSize, this.onError);
    socket.on('message', (datagram, rinfo) => this.receive(datagram, rinfo));
    this.socket = socket;
    this.events = events;
    this.ticker = setInterval(() => this.tick(), TICK_MS);
    this.ticker.unref();
    const bound = socket.address();
    return { address: bound.address, port: bound.port };
  }

  /** Encrypts a CoAP message for the endpoint's session; without one, or too large for its data MTU, it fails through `onSent`. */
  send(plaintext: Buffer, to: { address: string; port: number }, onSent: (error: Error | null) => void): void {
    const session = this.sessions.get(`${to.address}|${to.port}`);
    if (session === undefined || !session.established || this.socket === null) {
      onSent(new Error(`no DTLS session with ${to.address}:${to.port}`));
      return;
    }
    let datagrams: Buffer[];
    try {
      datagrams = this.native.write(session.handle, plaintext);
    } catch (error) {
      this.counters.tooLarge++;
      onSent(error as Error);
      return;
    }
    for (let i = 0; i < datagrams.length; i++) sendUdp(this.socket, datagrams[i], to, i === datagrams.length - 1 ? onSent : this.ignoreSent);
  }

  /** Ends every session of this identity (a revoked credential); how many ended. */
  endIdentity(kind: Security['kind'], identity: string): number {
    let ended = 0;
    for (const session of [...this.sessions.values()]) {
      const security = session.source?.security;
      if (security?.kind === kind && security.identity === identity) {
        this.end(session, true);
        ended++;
      }
    }
    this.counters.revoked += ended;
    return ended;
  }

  /** close_notify to every established session, then the socket closes. */
  async close(): Promise<void> {
    if (this.ticker !== null) clearInterval(this.ticker);
    this.ticker = null;
    const socket = this.socket;
    const pending: Promise<void>[] = [];
    for (const session of [...this.sessions.values(), ...this.replacements.values()]) {
      pending.push(new Promise((resolve) => this.end(session, true, resolve)));
    }
    this.socket = null;
    this.events = null;
    if (pending.length > 0) await Promise.race([Promise.all(pending), new Promise((resolve) => setTimeout(resolve, CLOSE_FLUSH_MS))]);
    await closeUdp(socket);
  }

  get stats(): Record<string, unknown> {
    const all = this.sessions.size + this.replacements.size;
    return { dtls: { sessions: all - this.handshaking.size, handshaking: this.handshaking.size, ...this.counters } };
  }

  // ---- receiving -------------------------------------------------------

  private receive(datagram: Buffer, rinfo: dgram.RemoteInfo): void {
    try {
      this.receiveDatagram(datagram, rinfo);
    } catch (error) {
      // A fault of ours costs that datagram, never the process.
      this.onError(new Error(`DTLS: error while handling a datagram from ${rinfo.address}:${rinfo.port}: ${(error as Error)?.stack ?? error}`));
    }
  }

  private receiveDatagram(datagram: Buffer, rinfo: dgram.RemoteInfo): void {
    if (unanswerableSource(rinfo.address, rinfo.port) !== null) {
      this.counters.badSource++;
      return;
    }
    const key = `${rinfo.address}|${rinfo.port}`;
    // While a new handshake is under way to replace an established session, its traffic goes to
    // it, and application data still to the session in place.
    const next = this.replacements.get(key);
    if (next !== undefined && !isApplicationData(datagram) && !this.startsAnother(next, datagram)) {
      this.feed(next, datagram);
      return;
    }
    const session = this.sessions.get(key);
    if (session !== undefined && !this.startsAnother(session, datagram)) {
      this.feed(session, datagram);
      return;
    }
    if (!startsInClear(datagram)) {
      // Records of a session that ended here (expired, server restarted): nothing to decrypt them with.
      this.counters.droppedNoSession++;
      return;
    }
    const { datagrams, session: handle, error } = this.native.listen(this.listener, key, datagram, this.pskLookup);
    this.output(datagrams, rinfo);
    if (error !== null) {
      const reason = failureReason(error);
      this.countFailure(reason);
      this.log.info(`DTLS: handshake with ${rinfo.address}:${rinfo.port} failed: ${reason} (${error})`);
      return;
    }
    if (handle === null) {
      if (datagrams.length > 0) this.counters.cookieRounds++;
      return;
    }
    this.accept(handle, key, rinfo, session, clientRandomOf(datagram));
  }

  /**
   * A ClientHello with a new random: the device restarted on the same port, during its handshake
   * or after it. OpenSSL would drop it; the listener answers it. A copy of the ClientHello that
   * opened the session (same random) is a retransmission or a late duplicate: the session's.
   */
  private startsAnother(session: DtlsSession, datagram: Buffer): boolean {
    if (!isClientHello(datagram)) return false;
    const random = clientRandomOf(datagram);
    return random === null || session.clientRandom === null || !random.equals(session.clientRandom);
  }

  /**
   * A ClientHello returned its cookie: the endpoint receives at its address, and gets a session if
   * there is room. An established session at that address stays until the new one is established:
   * a replayed ClientHello, even with its cookie, cannot end it.
   */
  private accept(handle: NativeSession, key: string, rinfo: dgram.RemoteInfo, previous: DtlsSession | undefined, clientRandom: Buffer | null): void {
    const replacing = previous !== undefined && previous.established;
    if (previous !== undefined && !replacing) {
      this.counters.replaced++;
      this.end(previous, false);
    }
    const pending = this.replacements.get(key);
    if (pending !== undefined) this.end(pending, false);
    if (this.sessions.size + this.replacements.size >= this.options.maxSessions || this.handshaking.size >= this.options.maxHandshakes) {
      this.counters.refusedFull++;
      this.native.free(handle);
      this.log.info(`DTLS: refused a handshake from ${rinfo.address}:${rinfo.port}: ${this.sessions.size} sessions, ${this.handshaking.size} handshakes under way (coaps.maxSessions, coaps.maxHandshakes)`);
      return;
    }
    const session = new DtlsSession(handle, key, rinfo.address, rinfo.port, familyOf(rinfo), now());
    // A copy: the datagram's memory is not kept for 32 bytes.
    session.clientRandom = clientRandom === null ? null : Buffer.from(clientRandom);
    if (replacing) this.replacements.set(key, session);
    else this.sessions.set(key, session);
    this.handshaking.add(session);
    // DTLSv1_listen already ran the first step of the handshake: its flight went out with the listen output.
    this.after(session, SessionState.HANDSHAKING, null);
  }

  private feed(session: DtlsSession, datagram: Buffer): void {
    session.lastHeard = now();
    if (!session.established) {
      if (session.held !== null) {
        if (session.held.length < MAX_HELD) session.held.push(datagram);
        return;
      }
      if (this.needsKey(session, datagram)) return;
    }
    const result = this.native.feed(session.handle, datagram, this.pskLookup);
    this.output(result.datagrams, session);
    if (session.freed) return;
    if (!session.established && result.state === SessionState.ESTABLISHED) this.established(session);
    for (const plaintext of result.data) {
      if (session.source === null || this.events === null) break;
      this.events.datagram(plaintext, session.source);
    }
    this.after(session, result.state, result.error);
  }

  /**
   * A ClientKeyExchange whose identity's key is not in memory: the datagram waits while the key
   * store fetches it, so that OpenSSL's synchronous PSK callback finds it. True when it waits.
   */
  private needsKey(session: DtlsSession, datagram: Buffer): boolean {
    const identity = pskIdentityOf(datagram);
    if (identity === null) return false;
    session.keyExchangeSeen = true;
    session.identity = identity;
    if (this.keys === null || this.keys.pskOf(identity) !== undefined) return false;
    session.held = [datagram];
    const resume = (): void => {
      const held = session.held ?? [];
      session.held = null;
      if (session.freed) return;
      try {
        for (const waiting of held) if (!session.freed) this.feed(session, waiting);
      } catch (error) {
        this.onError(new Error(`DTLS: error after fetching the key of ${identity}: ${(error as Error)?.stack ?? error}`));
      }
    };
    this.keys.fetchPsk(identity).then(resume, (error: unknown) => {
      this.log.info(`DTLS: cannot fetch the key of PSK identity ${JSON.stringify(identity)}: ${(error as Error)?.message ?? error}`);
      resume(); // the lookup then finds no key: the handshake fails with OpenSSL's alert
    });
    return true;
  }

  private established(session: DtlsSession): void {
    session.established = true;
    this.handshaking.delete(session);
    const info = this.native.info(session.handle);
    const pskIdentity = info.identity === null ? null : decodeIdentity(info.identity);
    const serial = ++this.sessionSerial;
    const security: Security | null = info.subject !== null
      ? { kind: 'certificate', identity: info.subject, session: serial }
      : pskIdentity !== null ? { kind: 'psk', identity: pskIdentity, session: serial } : null;
    if (security === null) {
      // No identity the layers above can name (a PSK identity that is not UTF-8 has no credential).
      this.fail(session, 'no_identity');
      return;
    }
    const key = `coaps|${serial}|${session.address}|${session.port}`;
    session.source = { address: session.address, port: session.port, family: session.family, key, security };
    this.counters.handshakesOk++;
    if (this.replacements.get(session.key) === session) {
      // The restarted device is through: its old session, and what was bound to it, end now.
      this.replacements.delete(session.key);
      const old = this.sessions.get(session.key);
      if (old !== undefined) this.end(old, false);
      this.sessions.set(session.key, session);
      this.counters.replaced++;
    }
    this.log.debug(`DTLS: session with ${session.address}:${session.port} (${security.kind} ${JSON.stringify(security.identity)}, ${info.cipher}, data MTU ${info.dataMtu})`);
  }

  /** What a feed's state means for the session. */
  private after(session: DtlsSession, state: SessionState, error: string | null): void {
    if (session.freed) return;
    if (state === SessionState.FAILED) this.fail(session, failureReason(error), error);
    else if (state === SessionState.CLOSED) {
      this.counters.closedByPeer++;
      this.end(session, false);
    }
  }

  private countFailure(reason: string): void {
    const { handshakesFailed } = this.counters;
    handshakesFailed[reason] = (handshakesFailed[reason] ?? 0) + 1;
  }

  private fail(session: DtlsSession, reason: string, detail: string | null = null): void {
    if (!session.established) this.countFailure(reason);
    const who = session.identity === null ? '' : ` (PSK identity ${JSON.stringify(session.identity)})`;
    this.log.info(`DTLS: ${session.established ? 'session' : 'handshake'} with ${session.address}:${session.port}${who} failed: ${reason}${detail === null ? '' : ` (${detail})`}`);
    this.end(session, false);
  }

  /** Forgets a session, with a close_notify when `notify`; the layers above are told if it was established. */
  private end(session: DtlsSession, notify: boolean, flushed?: () => void): void {
    if (session.freed) {
      flushed?.();
      return;
    }
    if (notify && session.established && this.socket !== null) {
      const datagrams = this.native.shutdown(session.handle);
      datagrams.forEach((datagram, i) =>
        sendUdp(this.socket as dgram.Socket, datagram, session, i === datagrams.length - 1 && flushed ? () => flushed() : this.ignoreSent));
      if (datagrams.length === 0) flushed?.();
    } else {
      flushed?.();
    }
    session.freed = true;
    session.held = null;
    this.native.free(session.handle);
    this.handshaking.delete(session);
    if (this.sessions.get(session.key) === session) this.sessions.delete(session.key);
    if (this.replacements.get(session.key) === session) this.replacements.delete(session.key);
    if (session.source !== null) this.events?.ended(session.source);
  }

  private output(datagrams: Buffer[], to: { address: string; port: number }): void {
    if (this.socket === null) return;
    for (const datagram of datagrams) sendUdp(this.socket, datagram, to, this.ignoreSent);
  }

  private readonly ignoreSent = (): void => {};

  /** OpenSSL's PSK callback, synchronous: only what the key store holds in memory. */
  private readonly pskLookup = (identity: Buffer): Buffer | null => {
    const name = decodeIdentity(identity);
    return name === null || this.keys === null ? null : this.keys.pskOf(name) ?? null;
  };

  // ---- time ------------------------------------------------------------

  private tick(): void {
    try {
      const at = now();
      for (const session of [...this.handshaking]) this.handshakeTimer(session, at);
      if (at - this.lastSweep >= SWEEP_EVERY_MS) {
        this.lastSweep = at;
        this.sweep(at);
      }
    } catch (error) {
      this.onError(new Error(`DTLS: error in the periodic tick: ${(error as Error)?.stack ?? error}`));
    }
  }

  private handshakeTimer(session: DtlsSession, at: number): void {
    if (at - session.startedAt >= this.options.handshakeTimeoutMs) {
      // A client whose key is wrong gets no alert: OpenSSL drops its Finished, and it retransmits until it gives up.
      this.fail(session, session.keyExchangeSeen ? 'timeout_after_key_exchange' : 'timeout');
      return;
    }
    if (session.held === null && this.native.timeout(session.handle) === 0) {
      this.output(this.native.handleTimeout(session.handle), session);
      if (this.native.info(session.handle).state === SessionState.FAILED) this.fail(session, 'protocol_error', 'retransmission failed');
    }
  }

  /** Idle sessions end (with close_notify, so that the device knows to shake hands again); the cookie secret rotates. */
  private sweep(at: number): void {
    const cutoff = at - this.options.sessionIdleMs;
    for (const session of [...this.sessions.values()]) {
      if (session.established && session.lastHeard <= cutoff) {
        this.counters.expired++;
        this.end(session, true);
      }
    }
    if (at - this.secretSince >= this.options.cookieSecretLifetimeMs) {
      const previous = this.secret;
      this.secret = crypto.randomBytes(32);
      this.secretSince = at;
      this.native.setCookieSecrets(this.context, this.secret, previous);
    }
  }
}
