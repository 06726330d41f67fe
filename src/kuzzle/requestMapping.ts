/**
 * The URI scheme: `POST /api/<controller>/<action>?<arguments>` with the body
 * as payload becomes the Kuzzle request payload
 * `{controller, action, jwt, body, ...arguments}`. The controller is every
 * path segment between `api` and the last one, so that plugin controllers
 * (`my-plugin/sensors`) are reachable.
 */
import { Code, Method } from '../coap/constants';
import type { Exchange } from '../coap/exchange';
import { CONTENT_FORMAT, decodePayload, isBodyFormat } from '../codec/contentFormat';
import { PayloadError } from '../codec/errors';
import type { Envelope } from '../config';

export const API_ROOT = 'api';

/** Uri-Query arguments that are the plugin's, never passed to Kuzzle. */
const ENVELOPE_ARGUMENT = 'envelope';
/** Arguments that the path alone decides. */
const PATH_ARGUMENTS = new Set(['controller', 'action']);
/** Arguments that are always strings, whatever they look like. */
const STRING_ARGUMENTS = new Set(['index', 'collection', '_id', 'jwt']);

/**
 * A Uri-Query value as Kuzzle expects it from a non-HTTP protocol: Kuzzle
 * parses flags, arrays and objects out of query strings for HTTP only, so
 * `true`/`false` become booleans and `[...]`/`{...}` JSON become arrays and
 * objects here. Numbers stay strings: Kuzzle reads numeric arguments from strings.
 */
function argumentValue(name: string, raw: string): unknown {
  if (STRING_ARGUMENTS.has(name)) return raw;
  if (raw === 'true') return true;
  if (raw === 'false') return false;
  if (raw.startsWith('[') || raw.startsWith('{')) {
    try {
      return JSON.parse(raw);
    } catch {
      return raw;
    }
  }
  return raw;
}

export class MappingError extends Error {
  constructor(readonly code: number, readonly id: string, message: string) {
    super(message);
  }
}

export interface ApiCall {
  data: Record<string, unknown>;
  envelope: Envelope;
}

/** `?envelope=compact|full`, else the configured default. */
export function envelopeOf(query: readonly string[], fallback: Envelope): Envelope {
  const chosen = queryArgument(query, ENVELOPE_ARGUMENT);
  return chosen === 'compact' || chosen === 'full' ? chosen : fallback;
}

/** The value of one `name=value` Uri-Query argument, or undefined. */
export function queryArgument(query: readonly string[], name: string): string | undefined {
  const prefix = `${name}=`;
  const item = query.find((candidate) => candidate.startsWith(prefix));
  return item === undefined ? undefined : item.slice(prefix.length);
}

export function isApiPath(path: readonly string[]): boolean {
  return path[0] === API_ROOT;
}

/** `/api/realtime/subscribe`: the one API path a GET or FETCH with Observe may name. */
export function isSubscribePath(path: readonly string[]): boolean {
  return path.length === 3 && path[0] === API_ROOT && path[1] === 'realtime' && path[2] === 'subscribe';
}

/** A registration or deregistration (RFC 7641) of a subscription: GET or FETCH with Observe. */
export function isObserveRequest(exchange: Exchange): boolean {
  return exchange.observe !== undefined && (exchange.method === Method.GET || exchange.method === Method.FETCH);
}

export function mapApiRequest(exchange: Exchange, envelope: Envelope): ApiCall {
  const { path } = exchange;
  if (path.length < 3 || path.some((segment) => segment === '')) {
    throw new MappingError(Code.NOT_FOUND, 'network.coap.url_not_found',
      `no API action at /${path.join('/')}: use /${API_ROOT}/<controller>/<action>`);
  }
  if (exchange.method !== Method.POST && !(isObserveRequest(exchange) && isSubscribePath(path))) {
    throw new MappingError(Code.METHOD_NOT_ALLOWED, 'network.coap.method_not_allowed',
      `/${API_ROOT}/... accepts POST, and GET or FETCH with Observe on /${API_ROOT}/realtime/subscribe`);
  }
  const data: Record<string, unknown> = {};
  for (const item of exchange.query) {
    const eq = item.indexOf('=');
    const name = eq === -1 ? item : item.slice(0, eq);
    if (name === '' || name === ENVELOPE_ARGUMENT || PATH_ARGUMENTS.has(name)) continue;
    // A bare flag (`?waitForRefresh`) is true, as in Kuzzle's HTTP query strings.
    data[name] = eq === -1 ? true : argumentValue(name, item.slice(eq + 1));
  }
  data.controller = path.slice(1, -1).join('/');
  data.action = path[path.length - 1];
  const body = decodeBody(exchange);
  if (body !== undefined) data.body = body;
  return { data, envelope };
}

function decodeBody(exchange: Exchange): unknown {
  const format = exchange.contentFormat ?? CONTENT_FORMAT.CBOR;
  if (exchange.payload.length === 0) return undefined;
  if (!isBodyFormat(format)) {
    throw new MappingError(Code.UNSUPPORTED_CONTENT_FORMAT, 'network.coap.unsupported_content_format',
      `Content-Format ${format} is not supported: send CBOR (60) or JSON (50)`);
  }
  try {
    return decodePayload(format, exchange.payload);
  } catch (error) {
    if (error instanceof PayloadError) throw new MappingError(Code.BAD_REQUEST, 'network.coap.invalid_payload', error.message);
    throw error;
  }
}
