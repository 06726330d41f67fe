/**
 * Message IDs of the messages this server sends, one 16-bit sequence per
 * remote endpoint (RFC 7252 §4.4), each from a random start. A sequence shared
 * by all endpoints wraps in seconds under fan-out, and a device then meets an
 * ID again inside its deduplication window and drops the message.
 *
 * At most `maxEndpoints` sequences are kept, least recently used first out: an
 * endpoint whose sequence was dropped starts again at a random ID.
 */
export class MessageIds {
  /** Next ID by endpoint key; Map order is use order (an entry moves to the back when used). */
  private readonly next = new Map<string, number>();

  constructor(private readonly maxEndpoints: number) {}

  /** The next ID for the endpoint `key` that `inUse` does not refuse (a CON of ours still in flight). */
  allocate(key: string, inUse: (id: number) => boolean): number {
    let id = this.next.get(key);
    if (id === undefined) {
      id = Math.floor(Math.random() * 0x10000);
      if (this.next.size >= this.maxEndpoints) this.next.delete(this.next.keys().next().value as string);
    } else {
      this.next.delete(key);
    }
    for (let tries = 0; tries < 0x10000 && inUse(id); tries++) id = (id + 1) & 0xffff;
    if (inUse(id)) throw new Error(`all 65536 message IDs to ${key} are in flight`);
    this.next.set(key, (id + 1) & 0xffff);
    return id;
  }

  clear(): void {
    this.next.clear();
  }
}
