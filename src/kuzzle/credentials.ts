/**
 * Device credentials for coaps: what a DTLS identity (a PSK identity, or a
 * client certificate's subject) may shake hands with, and which Kuzzle
 * identity its requests run as (a Kuzzle API key, used as the request's token
 * when the device sends none). The stores (credentialFile.ts,
 * credentialCollection.ts) fill it; the DTLS layer reads PSKs from it through
 * its KeyStore interface, synchronously, after `fetch`.
 */
import type { Security } from '../coap/datagramSocket';
import type { KeyStore } from '../dtls/dtlsSocket';

export interface DeviceCredential {
  readonly kind: Security['kind'];
  /** PSK identity, or certificate subject (RFC 2253, as OpenSSL prints it). */
  readonly identity: string;
  /** The pre-shared key (PSK credentials only). */
  readonly psk: Buffer | null;
  /** The Kuzzle API key the device's requests run with. */
  readonly apiKey: string;
}

const MAX_PSK_BYTES = 64;
const MAX_IDENTITY_BYTES = 256;

/** Names a credential in the stores: its kind and identity ("psk:sensor-1", "certificate:CN=sensor-3"). */
export function credentialKey(kind: Security['kind'], identity: string): string {
  return `${kind}:${identity}`;
}

export function sameCredential(a: DeviceCredential, b: DeviceCredential): boolean {
  return a.apiKey === b.apiKey && (a.psk === null ? b.psk === null : b.psk !== null && a.psk.equals(b.psk));
}

/**
 * A credential from its stored form, `{identity, psk | pskHex, apiKey}` or `{subject, apiKey}`;
 * a string saying what is wrong (to follow the entry's name) when it is not one.
 */
export function credentialOf(entry: unknown): DeviceCredential | string {
  if (typeof entry !== 'object' || entry === null) return ' must be an object';
  const { identity, subject, psk, pskHex, apiKey } = entry as Record<string, unknown>;
  if (typeof apiKey !== 'string' || apiKey === '') return '.apiKey must be a Kuzzle API key (a non-empty string)';
  if (typeof subject === 'string' && subject !== '') {
    if (identity !== undefined || psk !== undefined || pskHex !== undefined) return ': a certificate subject takes no identity or psk';
    return { kind: 'certificate', identity: subject, psk: null, apiKey };
  }
  if (typeof identity !== 'string' || identity === '' || Buffer.byteLength(identity) > MAX_IDENTITY_BYTES) {
    return `.identity must be a PSK identity of 1 to ${MAX_IDENTITY_BYTES} bytes (or give a certificate "subject")`;
  }
  const key = typeof psk === 'string' ? Buffer.from(psk, 'utf8')
    : typeof pskHex === 'string' && /^([0-9a-f]{2})+$/i.test(pskHex) ? Buffer.from(pskHex, 'hex') : null;
  if (key === null || (psk !== undefined && pskHex !== undefined)) return ' needs one of "psk" (text) or "pskHex" (hex digits)';
  if (key.length === 0 || key.length > MAX_PSK_BYTES) return `: the key must be 1 to ${MAX_PSK_BYTES} bytes`;
  return { kind: 'psk', identity, psk: key, apiKey };
}

/** One source of credentials. */
export interface CredentialStore {
  /** The credential if known now; null: known not to exist; undefined: not in memory, `fetch` first. */
  get(kind: Security['kind'], identity: string): DeviceCredential | null | undefined;
  fetch(kind: Security['kind'], identity: string): Promise<void>;
  close(): void;
  /** For operators: where it reads from and what it holds. */
  readonly stats: Record<string, unknown>;
}

/** The stores in order, the first that knows an identity wins; the DTLS layer's key store. */
export class Credentials implements KeyStore {
  constructor(private readonly stores: readonly CredentialStore[]) {}

  /** A credential, if one of the stores holds it in memory now (undefined: some store must fetch it first). */
  get(kind: Security['kind'], identity: string): DeviceCredential | null | undefined {
    let unknown = false;
    for (const store of this.stores) {
      const credential = store.get(kind, identity);
      if (credential) return credential;
      if (credential === undefined) unknown = true;
    }
    return unknown ? undefined : null;
  }

  async fetch(kind: Security['kind'], identity: string): Promise<void> {
    for (const store of this.stores) {
      if (store.get(kind, identity) === undefined) await store.fetch(kind, identity);
      if (store.get(kind, identity)) return;
    }
  }

  pskOf(identity: string): Buffer | null | undefined {
    const credential = this.get('psk', identity);
    return credential === undefined ? undefined : credential?.psk ?? null;
  }

  fetchPsk(identity: string): Promise<void> {
    return this.fetch('psk', identity);
  }

  /** The API key a session's requests run with; null when its credential is gone (revoked); undefined: `fetch` first. */
  tokenOf(security: Security): string | null | undefined {
    const credential = this.get(security.kind, security.identity);
    return credential === undefined ? undefined : credential?.apiKey ?? null;
  }

  close(): void {
    for (const store of this.stores) store.close();
  }

  get stats(): Record<string, unknown>[] {
    return this.stores.map((store) => store.stats);
  }
}
