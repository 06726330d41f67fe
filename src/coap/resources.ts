/**
 * Resource dispatch, the top of the transport: what a whole request asks for.
 * It owns deregistration (`Observe: 1`, RFC 7641 §3.6), the refusal of a
 * registration from an unverified peer (4.01 with an Echo value before
 * anything is subscribed: notifications are traffic the peer never asked for
 * datagram by datagram), `/.well-known/core` (RFC 6690), and handing every
 * other request to the application's handler, whose faults cost that exchange
 * a 5.00, never the process. It does not own how answers are framed or sent.
 */
import { Code, codeText } from './constants';
import type { Exchange } from './exchange';
import { Link, filterLinks, serializeLinks } from './linkFormat';
import type { ErrorFormatter, TransportLogger } from './messageLayer';
import type { ObserveLayer } from './observe';

export type RequestHandler = (exchange: Exchange) => void | Promise<void>;

const LINK_FORMAT = 40;
const SAFE_METHODS = new Set([1, 5]); // GET, FETCH

function isWellKnownCore(path: readonly string[]): boolean {
  return path.length === 2 && path[0] === '.well-known' && path[1] === 'core';
}

export class ResourceLayer {
  private handlerErrors = 0;

  constructor(
    private readonly links: readonly Link[],
    private readonly observers: ObserveLayer,
    /** The peer must still show that it receives at its address (the amplification limit applies). */
    private readonly guarded: (exchange: Exchange) => boolean,
    private readonly handler: RequestHandler,
    private readonly formatError: ErrorFormatter,
    private readonly log: TransportLogger,
  ) {}

  get stats(): { handlerErrors: number } {
    return { handlerErrors: this.handlerErrors };
  }

  request(exchange: Exchange): void {
    if (exchange.method > 7) {
      this.fail(exchange, Code.METHOD_NOT_ALLOWED, 'method_not_allowed', `unknown method code ${codeText(exchange.method)}`);
      return;
    }
    if (exchange.observe !== undefined && SAFE_METHODS.has(exchange.method)) {
      if (exchange.observe === 0 && this.guarded(exchange)) {
        exchange.requireEcho(); // answers 4.01 + Echo
        return;
      }
      if (exchange.observe === 1) {
        // Deregistration: the relation of this token ends; the request is then served as usual.
        const relation = this.observers.find(exchange.remote, exchange.token);
        if (relation !== undefined) this.observers.end(relation, 'deregistered');
      }
    }
    if (isWellKnownCore(exchange.path)) {
      this.serveLinks(exchange);
      return;
    }
    this.runHandler(exchange);
  }

  private serveLinks(exchange: Exchange): void {
    if (exchange.method !== 1) {
      this.fail(exchange, Code.METHOD_NOT_ALLOWED, 'method_not_allowed', '/.well-known/core only answers GET');
      return;
    }
    if (exchange.accept !== undefined && exchange.accept !== LINK_FORMAT) {
      this.fail(exchange, Code.NOT_ACCEPTABLE, 'not_acceptable', `/.well-known/core is only served as link-format (${LINK_FORMAT})`);
      return;
    }
    const links = serializeLinks(filterLinks(this.links, exchange.query));
    exchange.respond({ code: Code.CONTENT, contentFormat: LINK_FORMAT, payload: Buffer.from(links) });
  }

  private runHandler(exchange: Exchange): void {
    const onError = (error: unknown): void => {
      this.handlerErrors++;
      this.log.error(`CoAP: request handler failed for ${exchange.remote.key}: ${(error as Error)?.stack ?? error}`);
      if (!exchange.answered) this.fail(exchange, Code.INTERNAL_SERVER_ERROR, 'internal_error', 'internal server error');
    };
    try {
      const result = this.handler(exchange);
      if (result !== undefined) result.catch(onError);
    } catch (error) {
      onError(error);
    }
  }

  private fail(exchange: Exchange, code: number, reason: string, message: string): void {
    exchange.respond(this.formatError(exchange, code, reason, message));
  }
}
