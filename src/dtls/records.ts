/**
 * Reading DTLS 1.2 records in clear (RFC 6347 §4.1, §4.2.2), before OpenSSL
 * sees them: which datagrams start a handshake, and the PSK identity a
 * ClientKeyExchange carries (RFC 4279 §2), so that its key can be fetched
 * before the synchronous PSK callback needs it. Nothing here trusts a length.
 */

const RECORD_HEADER = 13;
const HANDSHAKE_HEADER = 12;
const CONTENT_HANDSHAKE = 22;
const CONTENT_APPLICATION_DATA = 23;
const CLIENT_HELLO = 1;
const CLIENT_KEY_EXCHANGE = 16;
/** RFC 4279 §5.3: identities are at most 2^16 - 1 bytes; OpenSSL takes at most 256. */
const MAX_IDENTITY = 256;

/** A handshake record of epoch 0 (in clear) at `offset`: its handshake message type, or -1. */
function clearHandshakeType(datagram: Buffer, offset: number): number {
  if (datagram.length < offset + RECORD_HEADER + HANDSHAKE_HEADER) return -1;
  if (datagram[offset] !== CONTENT_HANDSHAKE || datagram.readUInt16BE(offset + 3) !== 0) return -1;
  return datagram[offset + RECORD_HEADER];
}

/** The datagram opens a handshake: its first record is a ClientHello in clear. */
export function isClientHello(datagram: Buffer): boolean {
  return clearHandshakeType(datagram, 0) === CLIENT_HELLO;
}

/**
 * The 32-byte random of a ClientHello datagram (after client_version, RFC 5246 §7.4.1.2), or null.
 * A retransmitted ClientHello repeats it; a client that starts a new handshake draws a new one.
 */
export function clientRandomOf(datagram: Buffer): Buffer | null {
  if (!isClientHello(datagram) || datagram.readUIntBE(RECORD_HEADER + 6, 3) !== 0) return null;
  const random = RECORD_HEADER + HANDSHAKE_HEADER + 2;
  return datagram.length >= random + 32 ? datagram.subarray(random, random + 32) : null;
}

/** The datagram's first record is application data. */
export function isApplicationData(datagram: Buffer): boolean {
  return datagram.length >= RECORD_HEADER && datagram[0] === CONTENT_APPLICATION_DATA;
}

/** The datagram's first record is a handshake message in clear (epoch 0). */
export function startsInClear(datagram: Buffer): boolean {
  return clearHandshakeType(datagram, 0) !== -1;
}

/**
 * The PSK identity of a ClientKeyExchange in this datagram, in its first fragment, or null. The
 * bytes are the client's: the identity is decoded as UTF-8, and one that is not valid UTF-8 is
 * returned as null (no credential can name it).
 */
export function pskIdentityOf(datagram: Buffer): string | null {
  for (let offset = 0; offset + RECORD_HEADER <= datagram.length;) {
    const length = datagram.readUInt16BE(offset + 11);
    const end = offset + RECORD_HEADER + length;
    if (end > datagram.length) return null;
    if (clearHandshakeType(datagram, offset) === CLIENT_KEY_EXCHANGE && datagram.readUIntBE(offset + RECORD_HEADER + 6, 3) === 0) {
      const body = offset + RECORD_HEADER + HANDSHAKE_HEADER;
      if (body + 2 > end) return null;
      const size = datagram.readUInt16BE(body);
      if (size === 0 || size > MAX_IDENTITY || body + 2 + size > end) return null;
      return decodeIdentity(datagram.subarray(body + 2, body + 2 + size));
    }
    offset = end;
  }
  return null;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** An identity as credentials name it; null when its bytes are not UTF-8. */
export function decodeIdentity(bytes: Buffer): string | null {
  try {
    return utf8.decode(bytes);
  } catch {
    return null;
  }
}
