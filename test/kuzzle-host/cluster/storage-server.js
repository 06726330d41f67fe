'use strict';

/*
 * The in-memory Elasticsearch 7 emulation (../memory-elasticsearch.js) served over HTTP, so that
 * every node of a cluster shares one storage: each node's Kuzzle uses its own ES client with
 * `services.storageEngine.client.node = <url>`. FOR TESTS ONLY (see memory-elasticsearch.js).
 *
 * It runs in the calling process (the test process): one store, no extra child to manage. Requests
 * are decoded the way @elastic/elasticsearch-mock decodes them for the emulation (query string
 * object, JSON body, NDJSON body as an array of lines, gzip), and answered with the emulation's
 * status and body.
 */

const http = require('node:http');
const querystring = require('node:querystring');
const zlib = require('node:zlib');
const { createMemoryElasticsearch } = require('../memory-elasticsearch');

function decodeBody(req, raw) {
  let buffer = raw;
  if ((req.headers['content-encoding'] || '').includes('gzip')) buffer = zlib.gunzipSync(buffer);
  const text = buffer.toString('utf8');
  if (text.trim() === '') return null;
  if ((req.headers['content-type'] || '').includes('x-ndjson')) {
    return text.split(/\r?\n/).filter((line) => line.trim() !== '').map((line) => JSON.parse(line));
  }
  return JSON.parse(text);
}

function send(req, res, statusCode, payload) {
  const text = typeof payload === 'string' ? payload : JSON.stringify(payload);
  res.writeHead(statusCode, {
    'content-type': typeof payload === 'string' ? 'text/plain; charset=UTF-8' : 'application/json; charset=UTF-8',
    'content-length': Buffer.byteLength(text),
    'x-elastic-product': 'Elasticsearch',
  });
  res.end(req.method === 'HEAD' ? undefined : text);
}

/**
 * Starts the HTTP server on host:port (port 0: a free one).
 * @returns {Promise<{url, host, port, store, requests(): number, stop(): Promise<void>}>}
 */
async function startStorageServer({ host = '127.0.0.1', port = 0 } = {}) {
  const store = createMemoryElasticsearch();
  let requests = 0;
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (chunk) => chunks.push(chunk));
    req.on('end', () => {
      requests++;
      let body;
      try {
        body = decodeBody(req, Buffer.concat(chunks));
      } catch (error) {
        send(req, res, 400, { error: { type: 'parse_exception', reason: error.message }, status: 400 });
        return;
      }
      const url = new URL(req.url, 'http://storage');
      const result = store.handle({
        method: req.method,
        path: url.pathname,
        querystring: { ...querystring.parse(url.search.slice(1)) },
        body,
      });
      // An error answer is the 7.x client's ResponseError (status + body); anything else is a 200 body.
      if (result instanceof Error) send(req, res, result.statusCode ?? 500, result.body ?? '');
      else send(req, res, 200, result ?? '');
    });
  });
  // Kuzzle's client keeps connections alive: do not close them under its feet.
  server.keepAliveTimeout = 120000;
  server.headersTimeout = 121000;
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.unref(); // killed with this process; stop() closes it
  const bound = server.address().port;
  let stopped = null;
  return {
    url: `http://${host}:${bound}`,
    host,
    port: bound,
    store,
    requests: () => requests,
    stop() {
      stopped ??= new Promise((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      return stopped;
    },
  };
}

module.exports = { startStorageServer };
