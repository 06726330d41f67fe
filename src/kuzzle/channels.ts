/**
 * Which connection joined which Kuzzle realtime channel, both ways, so that a
 * notification finds its connections and a departing connection leaves every
 * channel at once (Kuzzle 2.56 does not call leaveChannel when a connection is
 * removed).
 */
import { addTo, removeFrom } from './setMaps';

export class Channels {
  private readonly members = new Map<string, Set<string>>();
  private readonly joined = new Map<string, Set<string>>();

  join(channel: string, connectionId: string): void {
    addTo(this.members, channel, connectionId);
    addTo(this.joined, connectionId, channel);
  }

  leave(channel: string, connectionId: string): void {
    removeFrom(this.members, channel, connectionId);
    removeFrom(this.joined, connectionId, channel);
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
