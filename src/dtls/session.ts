/**
 * One DTLS session with one remote endpoint, as libcoap's `coap_session_t`
 * holds it: the native SSL, where the handshake stands, who it
 * authenticated, when the endpoint was last heard from, and the few
 * handshake datagrams held while the key of its PSK identity is fetched.
 */
import type { Source } from '../coap/datagramSocket';
import type { NativeSession } from './native';

/** Handshake datagrams held per session while its PSK is fetched: one flight at most. */
export const MAX_HELD = 4;

export class DtlsSession {
  established = false;
  /** Built once the handshake completes, and given with every datagram after it. */
  source: Source | null = null;
  lastHeard: number;
  /** The client sent its key exchange: a handshake that stops after it most likely used a wrong key. */
  keyExchangeSeen = false;
  /** PSK identity named in the key exchange, once seen. */
  identity: string | null = null;
  /** Datagrams waiting for a PSK fetch; null when none is under way. */
  held: Buffer[] | null = null;
  freed = false;
  /** The random of the ClientHello that opened it: a late duplicate of that ClientHello must not replace the session. */
  clientRandom: Buffer | null = null;

  constructor(
    readonly handle: NativeSession,
    readonly key: string,
    readonly address: string,
    readonly port: number,
    readonly family: 'IPv4' | 'IPv6',
    readonly startedAt: number,
  ) {
    this.lastHeard = startedAt;
  }
}
