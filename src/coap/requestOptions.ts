/**
 * Reads a request's options into its Exchange, once, and says why the request
 * must be refused, if it must (RFC 7252 §5.4). Options outside their format
 * (OPTION_FORMATS) are unrecognised: a critical one refuses the request, an
 * elective one is ignored (§5.4.5). It knows nothing of what the options ask
 * for: the layers above act on the fields it fills.
 */
import { decodeBlock } from './blockwise';
import { Code, OPTION_FORMATS, Option, UNDERSTOOD_CRITICAL } from './constants';
import type { Exchange } from './exchange';
import { readUint } from './message';

export interface OptionProblem {
  code: number;
  reason: string;
  message: string;
  /** An unrecognised critical option: a NON is rejected outright (§5.4.1). */
  reject?: true;
}

export function readOptions(exchange: Exchange): OptionProblem | null {
  let previous = -1;
  for (const { number, value } of exchange.message.options) {
    const format = OPTION_FORMATS.get(number);
    const repeated = number === previous;
    previous = number;
    if (format !== undefined && (value.length < format.min || value.length > format.max || (repeated && !format.repeatable))) {
      if ((number & 1) === 0) continue;
      const what = repeated && !format.repeatable ? 'repeated' : `of invalid length ${value.length}`;
      return { code: Code.BAD_OPTION, reason: 'bad_option', message: `critical option ${number} ${what}`, reject: true };
    }
    switch (number) {
      case Option.URI_PATH: exchange.path.push(value.toString('utf8')); break;
      case Option.URI_QUERY: exchange.query.push(value.toString('utf8')); break;
      case Option.CONTENT_FORMAT: exchange.contentFormat ??= readUint(value); break;
      case Option.ACCEPT: exchange.accept ??= readUint(value); break;
      case Option.OBSERVE: exchange.observe ??= readUint(value); break;
      case Option.SIZE2: exchange.wantsSize2 = true; break;
      case Option.ECHO: exchange.echo = value; break;
      case Option.NO_RESPONSE: exchange.noResponse = readUint(value); break;
      case Option.BLOCK1:
      case Option.BLOCK2: {
        const block = decodeBlock(value);
        if (block === null) return { code: Code.BAD_OPTION, reason: 'bad_option', message: `malformed Block option ${number}` };
        if (number === Option.BLOCK1) exchange.block1 ??= block;
        else exchange.block2 ??= block;
        break;
      }
      case Option.PROXY_URI:
      case Option.PROXY_SCHEME:
        return { code: Code.PROXYING_NOT_SUPPORTED, reason: 'proxying_not_supported', message: 'this server is not a proxy' };
      default:
        if (number & 1 && !UNDERSTOOD_CRITICAL.has(number)) {
          return { code: Code.BAD_OPTION, reason: 'bad_option', message: `unsupported critical option ${number}`, reject: true };
        }
    }
  }
  if (exchange.block2 !== null && exchange.block2.szx === 7) {
    return { code: Code.BAD_REQUEST, reason: 'bad_option', message: 'BERT blocks (szx 7) are for CoAP over TCP' };
  }
  return null;
}
