/**
 * Kuzzle answers as CoAP responses: the code that follows Kuzzle's status, the
 * body in the format the device accepts, in Kuzzle's full envelope or the
 * compact one (`result`, or `error` as {status, id, message}).
 */
import type { CoapResponse } from '../coap/exchange';
import { Code, code } from '../coap/constants';
import { CONTENT_FORMAT, encodePayload } from '../codec/contentFormat';
import type { Envelope } from '../config';
import type { KuzzleErrorJson, KuzzleResponse } from './host';

// Kuzzle statuses whose CoAP code has the same number (RFC 7252 §12.1.2, RFC 8132 for 4.09, RFC 8516 for 4.29).
const SAME_NUMBER = new Set([400, 401, 403, 404, 405, 406, 409, 412, 413, 415, 429, 500, 501, 502, 503, 504]);

export function coapCodeOf(status: number): number {
  if (status >= 200 && status < 300) return Code.CONTENT;
  if (SAME_NUMBER.has(status)) return code(Math.floor(status / 100), status % 100);
  return status >= 500 ? Code.INTERNAL_SERVER_ERROR : Code.BAD_REQUEST;
}

// CoAP codes without an HTTP twin, as RFC 8075 §7 maps them.
const STATUS_OF_CODE: Readonly<Record<number, number>> = {
  [Code.BAD_OPTION]: 400,
  [Code.REQUEST_ENTITY_INCOMPLETE]: 400,
  [Code.PROXYING_NOT_SUPPORTED]: 502,
};

/** The Kuzzle-style status of an error the plugin itself produces. */
export function statusOf(coapCode: number): number {
  return STATUS_OF_CODE[coapCode] ?? (coapCode >> 5) * 100 + (coapCode & 0x1f);
}

/** The response Content-Format for a request's Accept; null when we cannot produce it. */
export function responseFormat(accept: number | undefined): number | null {
  if (accept === undefined || accept === CONTENT_FORMAT.CBOR) return CONTENT_FORMAT.CBOR;
  return accept === CONTENT_FORMAT.JSON ? CONTENT_FORMAT.JSON : null;
}

export interface CompactError {
  status: number;
  id: string;
  message: string;
}

function compactError(error: KuzzleErrorJson, status: number): CompactError {
  return { status: error.status ?? status, id: error.id ?? 'core.fatal.unexpected_error', message: error.message ?? '' };
}

interface Content {
  result?: unknown;
  error?: KuzzleErrorJson | null;
}

function body(response: KuzzleResponse, envelope: Envelope): unknown {
  const content = response.content as Content | null;
  if (envelope === 'full' || response.raw || content === null || typeof content !== 'object') return content;
  if (response.status >= 400 || (content.error && response.status !== 206)) {
    return compactError(content.error ?? {}, response.status);
  }
  // 206: some parts failed; the compact form keeps the errors beside the result.
  if (response.status === 206 && content.error) {
    return { result: content.result, error: compactError(content.error, response.status) };
  }
  return content.result;
}

export function fromKuzzle(response: KuzzleResponse, envelope: Envelope, format: number): CoapResponse {
  return {
    code: coapCodeOf(response.status),
    contentFormat: format,
    payload: encodePayload(format, body(response, envelope)),
  };
}

/** A result of the plugin's own, in the envelope a Kuzzle result would have. */
export function pluginResult(result: unknown, envelope: Envelope, format: number): CoapResponse {
  const value = envelope === 'compact' ? result : { status: 200, error: null, result };
  return { code: Code.CONTENT, contentFormat: format, payload: encodePayload(format, value) };
}

/** An error of the plugin's own, shaped as Kuzzle's so that devices parse one form. */
export function pluginError(coapCode: number, id: string, message: string, envelope: Envelope, format: number): CoapResponse {
  const error = { status: statusOf(coapCode), id, message };
  const value = envelope === 'compact' ? error : { status: error.status, error, result: null };
  return { code: coapCode, contentFormat: format, payload: encodePayload(format, value) };
}
