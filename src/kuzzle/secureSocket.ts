/**
 * The coaps socket as the configuration describes it: PEM files read at init,
 * the DTLS layer created (a missing native addon fails init here, with how to
 * fix it), and the Block2 size that keeps every CoAP message within one
 * record of the configured MTU.
 */
import fs from 'node:fs';
import type { CoapConfig } from '../config';
import { DtlsSocket } from '../dtls/dtlsSocket';
import type { Credentials } from './credentials';
import type { DtlsLogger } from '../dtls/dtlsSocket';

/** DTLS record header (13) plus the largest per-record cost of the suites offered (CBC-SHA256: IV 16, MAC 32, padding 16). */
const RECORD_OVERHEAD = 13 + 64;
/** A CoAP header (4), its payload marker and the options a block travels with (ETag, Observe, Block2, Size2, Max-Age, ...). */
const COAP_OVERHEAD = 4 + 1 + 64;

/** The largest power-of-two block (16..blockSize) that, with its header, token and options, fits one record. */
export function secureBlockSize(mtu: number, maxTokenLength: number, blockSize: number): number {
  const room = mtu - RECORD_OVERHEAD - COAP_OVERHEAD - maxTokenLength;
  let size = blockSize;
  while (size > 16 && size > room) size /= 2;
  return size;
}

function pem(path: string | null, what: string): Buffer | null {
  if (path === null) return null;
  try {
    return fs.readFileSync(path);
  } catch (error) {
    throw new Error(`coaps.${what}: cannot read ${path}: ${(error as Error).message}`);
  }
}

export function createSecureSocket(config: CoapConfig, credentials: Credentials, log: DtlsLogger, onError: (error: Error) => void): { socket: DtlsSocket; blockSize: number } {
  const { coaps } = config;
  const socket = new DtlsSocket(
    {
      host: coaps.host,
      port: coaps.port,
      receiveBufferSize: config.receiveBufferSize,
      ciphers: coaps.ciphers,
      mtu: coaps.mtu,
      certificate: pem(coaps.certificate, 'certificate'),
      privateKey: pem(coaps.privateKey, 'privateKey'),
      ca: pem(coaps.ca, 'ca'),
      verifyClient: coaps.verifyClient,
      handshakeTimeoutMs: coaps.handshakeTimeoutMs,
      maxSessions: coaps.maxSessions,
      maxHandshakes: coaps.maxHandshakes,
      sessionIdleMs: coaps.sessionIdleMs,
      cookieSecretLifetimeMs: coaps.cookieSecretLifetimeMs,
    },
    credentials,
    log,
    onError,
  );
  return { socket, blockSize: secureBlockSize(coaps.mtu, config.maxTokenLength, config.blockSize) };
}
