/**
 * What the plugin expects of its Kuzzle host: the entry point and context of
 * the protocol contract (seed documentation), in both the shape it documents
 * and the shape Kuzzle 2.56 really has (see shared notes).
 */

export interface ClientConnection {
  readonly id: string;
  readonly protocol: string;
  readonly ips: string[];
}

/** `RequestResponse.toJSON()` as the entry point's callback receives it. */
export interface KuzzleResponse {
  raw: boolean;
  status: number;
  requestId?: string | null;
  content: unknown;
  headers?: Record<string, unknown>;
}

export interface KuzzleErrorJson {
  id?: string;
  code?: number;
  message?: string;
  status?: number;
  props?: unknown;
  stack?: string;
}

export type ResponseCallback = (response: KuzzleResponse) => void;

export interface EntryPoint {
  config: { maxRequestSize?: string | number; protocols?: Record<string, unknown> } & Record<string, unknown>;
  /** Seed form `execute(request, cb)`; Kuzzle 2.x form `execute(connection, request, cb)`. */
  execute(...args: unknown[]): void;
  newConnection(connection: ClientConnection): void;
  removeConnection(connectionId: string): void;
}

export type RequestConstructor = new (data: Record<string, unknown>, options: Record<string, unknown>) => object;

export interface HostLog {
  silly?(message: unknown): void;
  debug(message: unknown): void;
  verbose?(message: unknown): void;
  info(message: unknown): void;
  warn(message: unknown): void;
  error(message: unknown): void;
}

export interface ProtocolContext {
  ClientConnection: new (protocol: string, ips: string[], headers?: Record<string, unknown>) => ClientConnection;
  /** Undefined in Kuzzle 2.56. */
  Request?: RequestConstructor;
  log: HostLog;
}
