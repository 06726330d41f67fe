/**
 * Which connection joined which Kuzzle realtime channel, both ways, so that a
 * notification finds its connections and a departing connection leaves every
 * channel at once (Kuzzle 2.56 does not call leaveChannel when a connection is
 * removed).
 */
export class Channels {
  private readonly members = new Map<string, Set<string>>();
  private readonly joined = new Map<string, Set<string>>();

  join(channel: string, connectionId: string): void {
    add(this.members, channel, connectionId);
    add(this.joined, connectionId, channel);
  }

  leave(channel: string, connectionId: string): void {
    remove(this.members, channel, connectionId);
    remove(this.joined, connectionId, channel);
  }

  /** Leaves every channel of a connection; returns the channels it had joined. */
  forget(connectionId: string): string[] {
    const channels = [...(this.joined.get(connectionId) ?? [])];
    for (const channel of channels) this.leave(channel, connectionId);
    return channels;
  }

  membersOf(channel: string): ReadonlySet<string> {
    return this.members.get(channel) ?? EMPTY;
  }

  channelsOf(connectionId: string): ReadonlySet<string> {
    return this.joined.get(connectionId) ?? EMPTY;
  }

  get channelCount(): number {
    return this.members.size;
  }
}

const EMPTY: ReadonlySet<string> = new Set();

function add(map: Map<string, Set<string>>, key: string, value: string): void {
  let set = map.get(key);
  if (set === undefined) map.set(key, (set = new Set()));
  set.add(value);
}

function remove(map: Map<string, Set<string>>, key: string, value: string): void {
  const set = map.get(key);
  if (set === undefined) return;
  set.delete(value);
  if (set.size === 0) map.delete(key);
}
