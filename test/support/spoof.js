'use strict';
/**
 * Datagrams with a source of the test's choosing, as an attacker sends them: IPv4 + UDP headers
 * written by hand on a raw socket (Debian's python3, which needs root, as CI is). The UDP source
 * port may be 0 and the source address any 127.x.y.z; the destination must be on loopback.
 * Nothing else can send from port 0: Node's dgram refuses it.
 *
 *   await sendSpoofed([{ from: '127.0.0.1', fromPort: 0, to: '127.0.0.1', toPort, bytes }])
 *
 * `listenAt(address)` is the victim of such a source: a socket at the spoofed address that counts
 * what the server sends it.
 */
const { execFile } = require('node:child_process');
const dgram = require('node:dgram');
const packet = require('coap-packet');
const { SYSTEM_PYTHON } = require('./peers');

const SENDER = `
import json, socket, struct, sys, time
raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
rate = float(sys.argv[1])
start = time.monotonic()
sent = 0
for line in sys.stdin:
    if rate > 0:
        ahead = start + sent / rate - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
    d = json.loads(line)
    if not d['to'].startswith('127.'):
        sys.exit('refusing to send to ' + d['to'] + ': loopback only')
    data = bytes.fromhex(d['hex'])
    udp = struct.pack('!HHHH', d['fromPort'], d['toPort'], 8 + len(data), 0) + data
    # Version/IHL, TOS, total length, ID, DF, TTL, UDP, checksum (the kernel fills it), source, destination.
    ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0,
                     socket.inet_aton(d['from']), socket.inet_aton(d['to']))
    raw.sendto(ip + udp, (d['to'], 0))
    sent += 1
print(sent)
`;

/**
 * Sends each datagram {from, fromPort, to, toPort, bytes}, at most `perSecond` a second when given
 * (so that a flood reaches the receiver rather than overflowing its socket queue); resolves with
 * how many left the raw socket.
 */
function sendSpoofed(datagrams, { perSecond = 0 } = {}) {
  return new Promise((resolve, reject) => {
    const child = execFile(SYSTEM_PYTHON, ['-c', SENDER, String(perSecond)], { timeout: 300_000, maxBuffer: 1 << 20 }, (error, stdout, stderr) => {
      if (error) {
        const hint = process.getuid?.() === 0 ? '' : ' (raw sockets need root)';
        reject(new Error(`raw sender failed${hint}: ${stderr || error.message}`));
      } else {
        resolve(Number(stdout.trim()));
      }
    });
    for (const d of datagrams) {
      child.stdin.write(`${JSON.stringify({ from: d.from, fromPort: d.fromPort, to: d.to, toPort: d.toPort, hex: Buffer.from(d.bytes).toString('hex') })}\n`);
    }
    child.stdin.end();
  });
}

/**
 * A UDP socket bound at `address` (a 127.x.y.z): what a server answers to datagrams spoofed from
 * it arrives here. With `rstCons`, it answers every CON with an RST, as a CoAP stack answers one
 * it did not expect. Resolves {address, port, messages (coap-packet parsed), bytes, close()}.
 */
async function listenAt(address, { rstCons = false } = {}) {
  const socket = dgram.createSocket('udp4');
  await new Promise((resolve) => socket.bind(0, address, resolve));
  const victim = {
    address,
    port: socket.address().port,
    messages: [],
    bytes: 0,
    close: () => socket.close(),
  };
  socket.on('message', (datagram, rinfo) => {
    victim.bytes += datagram.length;
    let message;
    try {
      message = packet.parse(datagram);
    } catch {
      message = { code: 'unparsable' };
    }
    victim.messages.push(message);
    if (rstCons && message.confirmable) socket.send(packet.generate({ code: '0.00', messageId: message.messageId, reset: true }), rinfo.port, rinfo.address);
  });
  return victim;
}

module.exports = { sendSpoofed, listenAt };
