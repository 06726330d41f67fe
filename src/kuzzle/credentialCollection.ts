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
 * as unknown, and every `cacheTtlMs` the cached credentials are read again
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

interface Cached {
  credential: DeviceCredential | null;
  at: number;
}

/** Documents read in one document:mGet when the cache is refreshed. */
const REFRESH_BATCH = 100;

export class CredentialCollection implements CredentialStore {
  /** By credential key, least recently used first. */
  private readonly cache = new Map<string, Cached>();
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
    const cached = this.cache.get(key);
    if (cached === undefined) return undefined;
    // Least recently used last out: a device in use stays cached while a flood of unknown identities churns.
    this.cache.delete(key);
    this.cache.set(key, cached);
    return cached.credential;
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
    this.cache.clear();
  }

  get stats(): Record<string, unknown> {
    const { index, collection } = this.options;
    return { collection: `${index}/${collection}`, cached: this.cache.size, ...this.counters };
  }

  /**
   * Reads the cached credentials again; those deleted or changed are revoked. Unknown identities
   * are forgotten: the next handshake that names one asks again.
   */
  async refresh(): Promise<void> {
    const now = Date.now();
    const keys: string[] = [];
    for (const [key, cached] of this.cache) {
      if (cached.credential !== null) keys.push(key);
      else if (now - cached.at >= this.options.cacheTtlMs) this.cache.delete(key);
    }
    const gone: DeviceCredential[] = [];
    for (let i = 0; i < keys.length; i += REFRESH_BATCH) {
      const ids = keys.slice(i, i + REFRESH_BATCH);
      const response = await this.query({ controller: 'document', action: 'mGet', body: { ids } });
      if (response.status !== 200) throw new Error(this.failure(response));
      const { successes = [] } = (response.content as { result?: { successes?: Array<{ _id: string; _source: unknown }> } }).result ?? {};
      const found = new Map(successes.map((document) => [document._id, document._source]));
      for (const key of ids) {
        const before = this.cache.get(key)?.credential;
        if (before === undefined || before === null) continue; // evicted or replaced meanwhile
        const after = found.has(key) ? this.parse(key, found.get(key)) : null;
        this.cache.set(key, { credential: after, at: Date.now() });
        if (after === null || !sameCredential(before, after)) gone.push(before);
      }
    }
    this.counters.refreshed++;
    if (gone.length > 0) {
      this.counters.revoked += gone.length;
      this.revoked(gone);
    }
  }

  private store(key: string, credential: DeviceCredential | null): void {
    this.cache.delete(key);
    this.cache.set(key, { credential, at: Date.now() });
    while (this.cache.size > this.options.cacheSize) {
      this.cache.delete(this.cache.keys().next().value as string);
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
