/**
 * CoAP numbers from RFC 7252 (messages, codes, options), RFC 7959 (Block-wise),
 * RFC 7641 (Observe), RFC 8132 (FETCH/PATCH) and RFC 7967 (No-Response).
 * Codes are kept as the wire byte (class << 5 | detail) so that nothing on the
 * hot path parses "2.05"-style strings.
 */

export const Type = { CON: 0, NON: 1, ACK: 2, RST: 3 } as const;
export type MessageType = (typeof Type)[keyof typeof Type];

/** Wire byte of a code "c.dd". */
export function code(cls: number, detail: number): number {
  return (cls << 5) | detail;
}

/** "c.dd" text of a wire code byte, for logs and diagnostics. */
export function codeText(byte: number): string {
  const detail = byte & 0x1f;
  return `${byte >> 5}.${detail < 10 ? '0' : ''}${detail}`;
}

export const Method = {
  GET: 1,
  POST: 2,
  PUT: 3,
  DELETE: 4,
  FETCH: 5,
  PATCH: 6,
  IPATCH: 7,
} as const;

export const METHOD_NAMES: Readonly<Record<number, string>> = {
  1: 'GET', 2: 'POST', 3: 'PUT', 4: 'DELETE', 5: 'FETCH', 6: 'PATCH', 7: 'iPATCH',
};

export const Code = {
  EMPTY: 0,
  CREATED: code(2, 1),
  DELETED: code(2, 2),
  VALID: code(2, 3),
  CHANGED: code(2, 4),
  CONTENT: code(2, 5),
  CONTINUE: code(2, 31),
  BAD_REQUEST: code(4, 0),
  UNAUTHORIZED: code(4, 1),
  BAD_OPTION: code(4, 2),
  FORBIDDEN: code(4, 3),
  NOT_FOUND: code(4, 4),
  METHOD_NOT_ALLOWED: code(4, 5),
  NOT_ACCEPTABLE: code(4, 6),
  REQUEST_ENTITY_INCOMPLETE: code(4, 8),
  CONFLICT: code(4, 9),
  PRECONDITION_FAILED: code(4, 12),
  REQUEST_ENTITY_TOO_LARGE: code(4, 13),
  UNSUPPORTED_CONTENT_FORMAT: code(4, 15),
  UNPROCESSABLE_ENTITY: code(4, 22),
  TOO_MANY_REQUESTS: code(4, 29),
  INTERNAL_SERVER_ERROR: code(5, 0),
  NOT_IMPLEMENTED: code(5, 1),
  BAD_GATEWAY: code(5, 2),
  SERVICE_UNAVAILABLE: code(5, 3),
  GATEWAY_TIMEOUT: code(5, 4),
  PROXYING_NOT_SUPPORTED: code(5, 5),
} as const;

export const Option = {
  IF_MATCH: 1,
  URI_HOST: 3,
  ETAG: 4,
  IF_NONE_MATCH: 5,
  OBSERVE: 6,
  URI_PORT: 7,
  LOCATION_PATH: 8,
  OSCORE: 9,
  URI_PATH: 11,
  CONTENT_FORMAT: 12,
  MAX_AGE: 14,
  URI_QUERY: 15,
  HOP_LIMIT: 16,
  ACCEPT: 17,
  Q_BLOCK1: 19,
  LOCATION_QUERY: 20,
  BLOCK2: 23,
  BLOCK1: 27,
  SIZE2: 28,
  Q_BLOCK2: 31,
  PROXY_URI: 35,
  PROXY_SCHEME: 39,
  SIZE1: 60,
  ECHO: 252,
  NO_RESPONSE: 258,
  REQUEST_TAG: 292,
} as const;

/**
 * Critical options (odd numbers) this server understands. Any other critical
 * option in a request is answered 4.02 (RFC 7252 §5.4.1). Uri-Host and Uri-Port
 * are accepted and ignored: one server, one virtual host.
 */
export const UNDERSTOOD_CRITICAL: ReadonlySet<number> = new Set([
  Option.URI_HOST,
  Option.URI_PORT,
  Option.URI_PATH,
  Option.URI_QUERY,
  Option.ACCEPT,
  Option.BLOCK2,
  Option.BLOCK1,
]);

/** RFC 7252 §4.8.2: how long a message ID may be met again. */
export const EXCHANGE_LIFETIME_MS = 247_000;

/** No-Response (RFC 7967) bits: which response classes the client does not want. */
export const NO_RESPONSE_BITS: Readonly<Record<number, number>> = { 2: 0x02, 4: 0x08, 5: 0x10 };

/**
 * Value lengths and repeatability of the options this server reads (RFC 7252 §5.10, RFC 7959,
 * 7641, 7967, 9175). An option outside its format, or repeated where it may not be, is handled
 * as unrecognised (RFC 7252 §5.4.5): a critical one refuses the request, an elective one is ignored.
 */
export const OPTION_FORMATS: ReadonlyMap<number, { min: number; max: number; repeatable: boolean }> = new Map([
  [Option.URI_HOST, { min: 1, max: 255, repeatable: false }],
  [Option.OBSERVE, { min: 0, max: 3, repeatable: false }],
  [Option.URI_PORT, { min: 0, max: 2, repeatable: false }],
  [Option.URI_PATH, { min: 0, max: 255, repeatable: true }],
  [Option.CONTENT_FORMAT, { min: 0, max: 2, repeatable: false }],
  [Option.URI_QUERY, { min: 0, max: 255, repeatable: true }],
  [Option.ACCEPT, { min: 0, max: 2, repeatable: false }],
  [Option.BLOCK2, { min: 0, max: 3, repeatable: false }],
  [Option.BLOCK1, { min: 0, max: 3, repeatable: false }],
  [Option.SIZE2, { min: 0, max: 4, repeatable: false }],
  [Option.SIZE1, { min: 0, max: 4, repeatable: false }],
  [Option.ECHO, { min: 1, max: 40, repeatable: false }],
  [Option.NO_RESPONSE, { min: 0, max: 1, repeatable: false }],
]);
