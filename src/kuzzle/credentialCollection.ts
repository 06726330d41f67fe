/**
 * Device credentials in a Kuzzle collection (coaps.credentials.index and
 * .collection), read with a service API key, so that operators add, rotate
 * and revoke device credentials with Kuzzle's own API and admin console. A
 * document's `_id` is its credential's key ("psk:sensor-1",
 * "certificate:CN=sensor-3,O=Acme"), its body the same as a credentials
 * file's entry: `{identity, psk | pskHex, apiKey}` or `{subject, apiKey}`.
 *
 * Reads go through a bounded cache: an identity is fetched once (document:get)
 * when a handshake or a request needs it, unknown identities are remembered
 * as unknown (in a bounded table of their own: a flood of made-up identities
 * evicts its own entries, never a device's credential), and every
 * `cacheTtlMs` the cached credentials are read again
 * (document:mGet): one deleted or changed in the collection is revoked then,
 * so its sessions end within that time.
 */
import fs from 'node:fs';
import type { Security } from '../coap/datagramSocket';
import { CredentialStore, DeviceCredential, credentialKey, credentialOf, sameCredential } from './credentials';
import type { Execute } from './execution';
import type { ClientConnection, KuzzleResponse } from './host';

export interface CollectionOptions {
  index: string;
  collection: string;
  /** The service API key, or the file that holds it (read again when it changes). */
  apiKey: string | null;
  apiKeyFile: string | null;
  cacheSize: number;
  cacheTtlMs: number;
}

/** Documents read in one document:mGet when the cache is refreshed. */
const REFRESH_BATCH = 100;

export class CredentialCollection implements CredentialStore {
  /** Credentials by key, least recently used first. */
  private readonly known = new Map<string, DeviceCredential>();
  /** Keys found to name no credential, and when, oldest first. */
  private readonly unknown = new Map<string, number>();
  private readonly pending = new Map<string, Promise<void>>();
  private refresher: NodeJS.Timeout | null = null;
  private readonly counters = { fetched: 0, fetchErrors: 0, refreshed: 0, revoked: 0, invalid: 0, evicted: 0 };

  constructor(
    private readonly options: CollectionOptions,
    private readonly execute: Execute,
    private readonly connection: ClientConnection,
    private readonly revoked: (gone: readonly DeviceCredential[]) => void,
    private readonly log: { info(message: string): void; error(message: string): void },
  ) {}

  start(): void {
    this.refresher = setInterval(() => {
      this.refresh().catch((error: unknown) => this.log.error(`device credentials: refresh failed: ${(error as Error)?.message ?? error}`));
    }, this.options.cacheTtlMs);
    this.refresher.unref();
  }

  get(kind: Security['kind'], identity: string): DeviceCredential | null | undefined {
    const key = credentialKey(kind, identity);
    const credential = this.known.get(key);
    if (credential === undefined) return this.unknown.has(key) ? null : undefined;
    // Least recently used first out, among real credentials only.
    this.known.delete(key);
    this.known.set(key, credential);
    return credential;
  }

  /** Reads one credential into the cache; concurrent fetches of one identity share one read. */
  fetch(kind: Security['kind'], identity: string): Promise<void> {
    const key = credentialKey(kind, identity);
    let running = this.pending.get(key);
    if (running === undefined) {
      running = this.query({ controller: 'document', action: 'get', _id: key })
        .then((response) => {
          this.counters.fetched++;
          if (response.status === 404) this.store(key, null);
          else if (response.status === 200) this.store(key, this.parse(key, (response.content as { result?: { _source?: unknown } }).result?._source));
          else throw new Error(this.failure(response));
        })
        .catch((error: unknown) => {
          this.counters.fetchErrors++;
          throw error;
        })
        .finally(() => this.pending.delete(key));
      this.pending.set(key, running);
    }
    return running;
  }

  close(): void {
    if (this.refresher !== null) clearInterval(this.refresher);
    this.refresher = null;
    this.known.clear();
    this.unknown.clear();
  }

  get stats(): Record<string, unknown> {
    const { index, collection } = this.options;
    return { collection: `${index}/${collection}`, cached: this.known.size, unknown: this.unknown.size, ...this.counters };
  }

  /**
   * Reads the cached credentials again; those deleted or changed are revoked. Unknown identities
   * are forgotten: the next handshake that names one asks again.
   */
  async refresh(): Promise<void> {
    const cutoff = Date.now() - this.options.cacheTtlMs;
    for (const [key, at] of this.unknown) {
      if (at > cutoff) break; // the rest were found unknown later
      this.unknown.delete(key);
    }
    const keys = [...this.known.keys()];
    const gone: DeviceCredential[] = [];
    for (let i = 0; i < keys.length; i += REFRESH_BATCH) {
      const ids = keys.slice(i, i + REFRESH_BATCH);
      const response = await this.query({ controller: 'document', action: 'mGet', body: { ids } });
      if (response.status !== 200) throw new Error(this.failure(response));
      const { successes = [] } = (response.content as { result?: { successes?: Array<{ _id: string; _source: unknown }> } }).result ?? {};
      const found = new Map(successes.map((document) => [document._id, document._source]));
      for (const key of ids) {
        const before = this.known.get(key);
        if (before === undefined) continue; // evicted or gone meanwhile
        const after = found.has(key) ? this.parse(key, found.get(key)) : null;
        if (after === null) this.store(key, null);
        else this.known.set(key, after); // in place: reading it again is no use of it
        if (after === null || !sameCredential(before, after)) gone.push(before);
      }
    }
    this.counters.refreshed++;
    if (gone.length > 0) {
      this.counters.revoked += gone.length;
      this.revoked(gone);
    }
  }

  /** Remembers what a read found, each table within `cacheSize`, its oldest entries out first. */
  private store(key: string, credential: DeviceCredential | null): void {
    this.known.delete(key);
    this.unknown.delete(key);
    const table: Map<string, unknown> = credential === null ? this.unknown : this.known;
    table.set(key, credential ?? Date.now());
    while (table.size > this.options.cacheSize) {
      table.delete(table.keys().next().value as string);
      this.counters.evicted++;
    }
  }

  /** A document as a credential; null (logged) when it is not a valid one for its _id. */
  private parse(key: string, source: unknown): DeviceCredential | null {
    const credential = credentialOf(source);
    if (typeof credential !== 'string' && credentialKey(credential.kind, credential.identity) === key) return credential;
    this.counters.invalid++;
    const why = typeof credential === 'string' ? `the document${credential}` : `its _id must be ${JSON.stringify(credentialKey(credential.kind, credential.identity))}`;
    this.log.error(`device credential ${JSON.stringify(key)} in ${this.options.index}/${this.options.collection} is ignored: ${why}`);
    return null;
  }

  private query(request: Record<string, unknown>): Promise<KuzzleResponse> {
    const jwt = this.serviceKey();
    const { index, collection } = this.options;
    return new Promise((resolve, reject) => {
      try {
        this.execute({ ...request, index, collection, jwt }, this.connection, resolve);
      } catch (error) {
        reject(error);
      }
    });
  }

  private serviceKey(): string {
    if (this.options.apiKey !== null) return this.options.apiKey;
    return fs.readFileSync(this.options.apiKeyFile as string, 'utf8').trim();
  }

  private failure(response: KuzzleResponse): string {
    const error = (response.content as { error?: { id?: string; message?: string } } | null)?.error;
    return `reading ${this.options.index}/${this.options.collection} answered ${response.status}: ${error?.id ?? ''} ${error?.message ?? ''}`.trim();
  }
}
