/**
 * Running one request in Kuzzle, whichever host runs the plugin:
 * - the Request class is the context's (seed contract), else the one of the
 *   very Kuzzle whose entry point we were given (Kuzzle 2.56 gives none, and its
 *   controllers need methods kuzzle-common-objects lacks), else
 *   kuzzle-common-objects' for hosts that follow the seed and bring none;
 * - the request's origin is given as the class expects it: `connectionId` and
 *   `protocol` for the seed's, the ClientConnection for Kuzzle 2's;
 * - `execute` is called in the seed's form `(request, cb)` or in Kuzzle 2's
 *   `(connection, request, cb)`, told apart by its declared arity.
 */
import path from 'node:path';
import { Request as CommonObjectsRequest } from 'kuzzle-common-objects';
import type { ClientConnection, EntryPoint, ProtocolContext, RequestConstructor, ResponseCallback } from './host';

export type Execute = (data: Record<string, unknown>, connection: ClientConnection, callback: ResponseCallback) => void;

/** Kuzzle's request module, found next to the module that defines its EntryPoint class. */
function hostRequestClass(entryPoint: EntryPoint): RequestConstructor | undefined {
  const ctor = (entryPoint as object).constructor;
  for (const mod of Object.values(require.cache)) {
    if (mod === undefined || (mod.exports !== ctor && mod.exports?.EntryPoint !== ctor)) continue;
    try {
      const request = require(path.join(path.dirname(mod.filename), '..', '..', 'api', 'request'));
      if (typeof request.Request === 'function') return request.Request;
    } catch {
      // Not a Kuzzle layout: fall through to the next candidate.
    }
  }
  return undefined;
}

export function requestClassFor(entryPoint: EntryPoint, context: ProtocolContext): RequestConstructor {
  return context.Request ?? hostRequestClass(entryPoint) ?? (CommonObjectsRequest as unknown as RequestConstructor);
}

/**
 * `onFault` hears what a response callback threw: Kuzzle calls them from its own stack, where a
 * throw would reach its uncaughtException handler and stop the process.
 */
export function bindExecute(entryPoint: EntryPoint, context: ProtocolContext, protocol: string, onFault: (error: unknown) => void): Execute {
  const RequestClass = requestClassFor(entryPoint, context);
  const kuzzle2 = entryPoint.execute.length >= 3;
  // The seed's Request takes the connection id and protocol; Kuzzle 2's (and kuzzle-common-objects 5)
  // take the connection itself, which also carries the device's address.
  const origin = context.Request !== undefined
    ? (connection: ClientConnection) => ({ connectionId: connection.id, protocol })
    : (connection: ClientConnection) => ({ connection });
  return (data, connection, callback) => {
    const request = new RequestClass(data, origin(connection));
    const guarded: ResponseCallback = (response) => {
      try {
        callback(response);
      } catch (error) {
        onFault(error);
      }
    };
    if (kuzzle2) entryPoint.execute(connection, request, guarded);
    else entryPoint.execute(request, guarded);
  };
}
