/**
 * What the CoAP server sends and receives datagrams through: plain UDP here
 * (`UdpSocket`), or DTLS sessions over UDP (src/dtls). The server above sees
 * the same thing from both: a datagram, where it came from, and, over DTLS,
 * who the handshake authenticated. This module owns the UDP socket itself:
 * binding, its receive buffer, and skipping name lookups on sends.
 */
import dgram from 'node:dgram';
import dns from 'node:dns';
import net from 'node:net';

/** Who a DTLS handshake authenticated: a PSK identity or a client certificate's subject. */
export interface Security {
  readonly kind: 'psk' | 'certificate';
  readonly identity: string;
  /**
   * Numbers the session: state kept per endpoint (deduplicated answers, the Kuzzle connection and
   * its bound token) belongs to one session, never to the next one at the same address and port.
   */
  readonly session: number;
}

export interface Source {
  readonly address: string;
  readonly port: number;
  readonly family: 'IPv4' | 'IPv6';
  /**
   * Names the endpoint in every per-endpoint map: "address|port" on UDP. Over DTLS the session is
   * part of it ("coaps|session|address|port"): a device that shakes hands again at the same address
   * and port starts afresh (RFC 7252 §9.1: the session is the endpoint), and is never answered from
   * the previous session's deduplication cache. A DTLS session's Source is built once.
   */
  readonly key: string;
  /** Null on plain UDP. Over DTLS the handshake proved the address too (its cookie exchange). */
  readonly security: Security | null;
}

export interface SocketEvents {
  datagram(datagram: Buffer, from: Source): void;
  /** The security association of this source ended (DTLS): what was bound to it ends too (RFC 7252 §9.1). */
  ended(from: Source): void;
}

export interface DatagramSocket {
  /** Resolves once it listens; rejects with a readable reason (port in use, bad address). */
  open(events: SocketEvents): Promise<{ address: string; port: number }>;
  /** Never throws for a bad destination: the error goes to `onSent`, now or later. */
  send(datagram: Buffer, to: { address: string; port: number }, onSent: (error: Error | null) => void): void;
  close(): Promise<void>;
  readonly stats: Record<string, unknown>;
}

/** A UDP socket bound to `host`:`port`, with a receive buffer of `receiveBufferSize` (capped by net.core.rmem_max). */
export function bindUdp(host: string, port: number, receiveBufferSize: number, onError: (error: Error) => void): Promise<dgram.Socket> {
  const socket = dgram.createSocket({
    type: net.isIPv6(host) ? 'udp6' : 'udp4',
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
    const failed = (error: NodeJS.ErrnoException): void => {
      socket.close();
      const why = error.code === 'EADDRINUSE' ? 'the port is in use' : error.message;
      reject(new Error(`cannot listen on UDP [${host}]:${port}: ${why}`));
    };
    socket.once('error', failed);
    socket.bind(port, host, () => {
      socket.off('error', failed);
      // Room for the ACKs of a channel's CON notifications, which arrive while a broadcast is still being sent.
      socket.setRecvBufferSize(receiveBufferSize);
      socket.on('error', onError);
      resolve(socket);
    });
  });
}

export function familyOf(rinfo: dgram.RemoteInfo): 'IPv4' | 'IPv6' {
  return rinfo.family === 'IPv6' ? 'IPv6' : 'IPv4';
}

/** Sends one datagram; a destination the socket refuses at once (it throws) is reported like a later failure. */
export function sendUdp(socket: dgram.Socket, datagram: Buffer, to: { address: string; port: number }, onSent: (error: Error | null) => void): void {
  try {
    socket.send(datagram, to.port, to.address, onSent);
  } catch (error) {
    onSent(error as Error);
  }
}

export function closeUdp(socket: dgram.Socket | null): Promise<void> {
  return new Promise((resolve) => (socket ? socket.close(() => resolve()) : resolve()));
}

/** Plain CoAP over UDP. */
export class UdpSocket implements DatagramSocket {
  private socket: dgram.Socket | null = null;

  constructor(
    private readonly host: string,
    private readonly port: number,
    private readonly receiveBufferSize: number,
    private readonly onError: (error: Error) => void,
  ) {}

  async open(events: SocketEvents): Promise<{ address: string; port: number }> {
    const socket = await bindUdp(this.host, this.port, this.receiveBufferSize, this.onError);
    socket.on('message', (datagram, rinfo) =>
      events.datagram(datagram, { address: rinfo.address, port: rinfo.port, family: familyOf(rinfo), key: `${rinfo.address}|${rinfo.port}`, security: null }));
    this.socket = socket;
    const bound = socket.address();
    return { address: bound.address, port: bound.port };
  }

  send(datagram: Buffer, to: { address: string; port: number }, onSent: (error: Error | null) => void): void {
    if (this.socket !== null) sendUdp(this.socket, datagram, to, onSent);
  }

  close(): Promise<void> {
    const socket = this.socket;
    this.socket = null;
    return closeUdp(socket);
  }

  get stats(): Record<string, unknown> {
    return {};
  }
}
