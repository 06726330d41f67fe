/**
 * The project's native DTLS 1.2 engine (native/dtls.c, built by node-gyp at
 * `npm ci`): OpenSSL's DTLS server over memory BIOs, from the OpenSSL that
 * Node itself carries. It never touches a socket: datagrams go in and come out
 * as Buffers. This module loads it and types it; coaps never runs without it.
 */
import path from 'node:path';

/** Opaque handles owned by the addon (freed by their finalizers, or `free`). */
export interface NativeContext { readonly __dtlsContext: true }
export interface NativeListener { readonly __dtlsListener: true }
export interface NativeSession { readonly __dtlsSession: true }

export interface ContextOptions {
  ciphers: string;
  psk: boolean;
  certificate?: Buffer;
  privateKey?: Buffer;
  ca?: Buffer;
  verifyClient?: 'none' | 'optional' | 'require';
  mtu: number;
}

/** Called from inside OpenSSL's PSK callback, synchronously: the key of an identity, or null. */
export type PskLookup = (identity: Buffer) => Buffer | null;

/** A session's state as `feed` reports it: CLOSED when the peer sent close_notify, FAILED after a fatal alert either way. */
export const SessionState = { HANDSHAKING: 0, ESTABLISHED: 1, CLOSED: 2, FAILED: 3 } as const;
export type SessionState = (typeof SessionState)[keyof typeof SessionState];

export interface FeedResult {
  datagrams: Buffer[];
  data: Buffer[];
  state: SessionState;
  error: string | null;
}

export interface SessionInfo {
  /** Where the session stands now (a retransmission timer may have failed it). */
  state: SessionState;
  identity: Buffer | null;
  cipher: string | null;
  subject: string | null;
  dataMtu: number;
}

export interface DtlsNative {
  opensslVersion(): string;
  createContext(options: ContextOptions): NativeContext;
  setCookieSecrets(context: NativeContext, current: Buffer, previous: Buffer | null): void;
  createListener(context: NativeContext): NativeListener;
  /** `error`: the handshake failed at once (no shared cipher): `datagrams` holds the alert, nothing is kept. */
  listen(listener: NativeListener, peerKey: string, datagram: Buffer, psk: PskLookup): { datagrams: Buffer[]; session: NativeSession | null; error: string | null };
  feed(session: NativeSession, datagram: Buffer, psk: PskLookup): FeedResult;
  write(session: NativeSession, plaintext: Buffer): Buffer[];
  timeout(session: NativeSession): number;
  handleTimeout(session: NativeSession): Buffer[];
  shutdown(session: NativeSession): Buffer[];
  info(session: NativeSession): SessionInfo;
  free(session: NativeSession): void;
}

const ADDON = path.join(__dirname, '..', '..', 'build', 'Release', 'kuzzle_coap_dtls.node');

let loaded: DtlsNative | null = null;

/** The addon, or an Error that says why it cannot load and how to fix it. */
export function loadNative(): DtlsNative {
  if (loaded !== null) return loaded;
  try {
    loaded = require(ADDON) as DtlsNative;
  } catch (error) {
    throw new Error(`the native DTLS addon of this plugin (${ADDON}) could not be loaded: ${(error as Error).message}. `
      + 'Build it in the plugin\'s directory with `npm run build:native` (it needs python3, make and g++: '
      + '`apt-get install python3 make g++`), or disable coaps (coaps.enabled: false). Plain CoAP is never used instead.');
  }
  return loaded;
}
