/**
 * Device credentials from a JSON file (coaps.credentials.file), validated at
 * init and reloaded when the file changes. A credential that disappears or
 * changes is revoked: its live DTLS sessions end. A file that becomes invalid
 * is refused with a log line and the last valid one stays in force.
 *
 *   { "devices": [
 *       { "identity": "sensor-1", "psk": "a secret", "apiKey": "<Kuzzle API key>" },
 *       { "identity": "sensor-2", "pskHex": "0011...", "apiKey": "..." },
 *       { "subject": "CN=sensor-3,O=Acme", "apiKey": "..." } ] }
 */
import fs from 'node:fs';
import type { Security } from '../coap/datagramSocket';
import { CredentialStore, DeviceCredential, credentialKey, credentialOf, sameCredential } from './credentials';

/** How often the file is looked at (a poll of its stat: editors replace files, which fs.watch loses). */
const POLL_MS = 1000;

/** What identifies a version of the file. */
interface FileVersion {
  mtimeMs: number;
  size: number;
  ino: number;
}
const MISSING: FileVersion = { mtimeMs: 0, size: 0, ino: 0 };
const versionOf = (stat: fs.Stats): FileVersion => ({ mtimeMs: stat.mtimeMs, size: stat.size, ino: stat.ino });
const sameVersion = (a: FileVersion, b: FileVersion): boolean => a.mtimeMs === b.mtimeMs && a.size === b.size && a.ino === b.ino;

function fail(path: string, message: string): never {
  throw new Error(`device credentials file ${path}: ${message}`);
}

/** Parses and validates a credentials file's text; throws with the entry at fault. */
export function parseCredentials(text: string, path: string): Map<string, DeviceCredential> {
  let document: unknown;
  try {
    document = JSON.parse(text);
  } catch (error) {
    fail(path, `not JSON: ${(error as Error).message}`);
  }
  const devices = (document as { devices?: unknown } | null)?.devices;
  if (!Array.isArray(devices)) fail(path, 'expected { "devices": [ ... ] }');
  const credentials = new Map<string, DeviceCredential>();
  devices.forEach((entry: unknown, i) => {
    const at = `devices[${i}]`;
    const credential = credentialOf(entry);
    if (typeof credential === 'string') fail(path, `${at}${credential}`);
    const key = credentialKey(credential.kind, credential.identity);
    if (credentials.has(key)) fail(path, `${at}: ${credential.kind} ${JSON.stringify(credential.identity)} appears twice`);
    credentials.set(key, credential);
  });
  return credentials;
}

export class CredentialFile implements CredentialStore {
  private credentials: Map<string, DeviceCredential>;
  private poll: NodeJS.Timeout | null = null;
  /**
   * The version the last read saw, taken before reading: each poll compares with it (fs.watchFile
   * compared with its own first look, which could come after a change made right after the read:
   * that change was never seen).
   */
  private readVersion: FileVersion = MISSING;
  private reloads = 0;
  /** Reloads refused because the new file was invalid. */
  private refused = 0;

  /** Reads the file now: an unreadable or invalid file fails init. */
  constructor(
    private readonly path: string,
    /** Credentials that disappeared or changed: their sessions end. */
    private readonly revoked: (gone: readonly DeviceCredential[]) => void,
    private readonly log: { info(message: string): void; error(message: string): void },
  ) {
    this.credentials = this.read();
  }

  get stats(): Record<string, unknown> {
    return { file: this.path, credentials: this.credentials.size, reloads: this.reloads, refused: this.refused };
  }

  get(kind: Security['kind'], identity: string): DeviceCredential | null {
    return this.credentials.get(credentialKey(kind, identity)) ?? null;
  }

  fetch(): Promise<void> {
    return Promise.resolve();
  }

  watch(): void {
    if (this.poll) return;
    this.poll = setInterval(() => fs.stat(this.path, (error, stat) => {
      if (this.poll && !sameVersion(error ? MISSING : versionOf(stat), this.readVersion)) this.reload();
    }), POLL_MS);
    this.poll.unref();
  }

  close(): void {
    if (this.poll) clearInterval(this.poll);
    this.poll = null;
  }

  /** Re-reads the file; an invalid one keeps the credentials in force. */
  reload(): void {
    let next: Map<string, DeviceCredential>;
    try {
      next = this.read();
    } catch (error) {
      this.refused++;
      this.log.error(`${(error as Error).message}; the previous credentials stay in force`);
      return;
    }
    const gone = [...this.credentials.entries()].filter(([key, old]) => {
      const now = next.get(key);
      return now === undefined || !sameCredential(old, now);
    }).map(([, old]) => old);
    this.credentials = next;
    this.reloads++;
    this.log.info(`device credentials reloaded from ${this.path}: ${next.size} credential(s), ${gone.length} revoked or changed`);
    if (gone.length > 0) this.revoked(gone);
  }

  private read(): Map<string, DeviceCredential> {
    let text: string;
    try {
      this.readVersion = MISSING;
      this.readVersion = versionOf(fs.statSync(this.path));
      text = fs.readFileSync(this.path, 'utf8');
    } catch (error) {
      fail(this.path, `cannot be read: ${(error as Error).message}`);
    }
    return parseCredentials(text, this.path);
  }
}
