/**
 * Which datagram sources can be answered at all. UDP source addresses are not
 * authenticated: a datagram from port 0, or from an unspecified, multicast or
 * broadcast address, is spoofed or broken, and answering it either throws
 * (Node refuses port 0) or reflects traffic at many hosts. Such datagrams are
 * dropped before they are decoded.
 */
import net from 'node:net';

function ipv4Unanswerable(address: string): boolean {
  const first = Number(address.slice(0, address.indexOf('.')));
  // 0.0.0.0/8 (this network), 224.0.0.0/4 multicast, 240.0.0.0/4 reserved and 255.255.255.255 broadcast.
  return first === 0 || first >= 224;
}

/** Why a datagram from this source must not be answered, or null when it may be. */
export function unanswerableSource(address: string, port: number): string | null {
  if (port === 0) return 'source port 0';
  if (net.isIPv4(address)) return ipv4Unanswerable(address) ? `source address ${address}` : null;
  const lower = address.toLowerCase();
  if (lower.startsWith('::ffff:') && net.isIPv4(lower.slice(7))) {
    return ipv4Unanswerable(lower.slice(7)) ? `source address ${address}` : null;
  }
  if (lower === '::' || lower.startsWith('ff')) return `source address ${address}`;
  return null;
}
