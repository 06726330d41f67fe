/**
 * Echo option values (RFC 9175 §2.4) that let a peer prove it receives at its
 * address, with no state kept per value: a value carries when it was issued
 * and a MAC of that time and of the peer's IP address under a server secret,
 * so only a host that received it can return it, and only while it is fresh.
 * By default the port is left out (scope "address"): what an amplification
 * attack aims at is an address, and some clients send a repeated request from a
 * new port (node-coap's agent reopens its socket after each burst). Behind a
 * proxy that gives every device its own address (nginx's stream module), one
 * address is many devices, and a value one of them received must not verify
 * the others, which the sender of a spoofed datagram could then use: scope
 * "endpoint" puts the port in the MAC. A flag marks values issued with an answer withheld for the peer
 * (see amplification.ts): their return must never run the request again.
 *
 * Wire form (14 bytes): issued-at (uint32, seconds of a monotonic clock),
 * flags (1 byte), nonce (1 byte), HMAC-SHA256 truncated to 8 bytes.
 */
import { createHmac, randomBytes } from 'node:crypto';
import { now } from './clock';
import type { Remote } from './exchange';

const HEADER = 6;
const MAC = 8;
export const ECHO_LENGTH = HEADER + MAC;
const WITHHELD = 1;

export interface EchoCheck {
  valid: boolean;
  /** Issued with a withheld answer. */
  withheld: boolean;
}

const INVALID: EchoCheck = { valid: false, withheld: false };

/** What a value proves: that its holder receives at the address, or at the address and port. */
export type EchoScope = 'address' | 'endpoint';

export class EchoValues {
  private readonly secret = randomBytes(32);
  private nonce = 0;

  constructor(private readonly lifetimeMs: number, private readonly scope: EchoScope = 'address') {}

  /** A fresh value for `remote`; `withheld` when an answer waits for its return. */
  issue(remote: Remote, withheld: boolean): Buffer {
    const value = Buffer.allocUnsafe(ECHO_LENGTH);
    value.writeUInt32BE(seconds());
    value[4] = withheld ? WITHHELD : 0;
    value[5] = this.nonce = (this.nonce + 1) & 0xff;
    this.mac(remote, value).copy(value, HEADER, 0, MAC);
    return value;
  }

  check(value: Buffer, remote: Remote): EchoCheck {
    if (value.length !== ECHO_LENGTH) return INVALID;
    const age = seconds() - value.readUInt32BE(0);
    if (age < 0 || age * 1000 > this.lifetimeMs) return INVALID;
    if (!this.mac(remote, value).subarray(0, MAC).equals(value.subarray(HEADER))) return INVALID;
    return { valid: true, withheld: (value[4] & WITHHELD) !== 0 };
  }

  private mac(remote: Remote, value: Buffer): Buffer {
    return createHmac('sha256', this.secret).update(this.scope === 'endpoint' ? remote.key : remote.address)
      .update(value.subarray(0, HEADER)).digest();
  }
}

/** Whole seconds of the transport's monotonic clock: a wall-clock step cannot revive old values. */
function seconds(): number {
  return Math.floor(now() / 1000);
}
