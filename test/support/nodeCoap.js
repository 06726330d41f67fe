'use strict';
/**
 * node-coap (the `coap` package) as a client of the tests. node-coap 1.x does not handle the Echo
 * option (RFC 9175): an answer the server withholds from an unverified address comes back as 4.01
 * with an Echo value, and `nodeCoapRequest` repeats the request with it, as an application on
 * node-coap has to (libcoap's clients do it by themselves).
 */
const coap = require('coap');

const ECHO = '252';

function once(params, options, body, timeoutMs) {
  return new Promise((resolve, reject) => {
    const req = coap.request(params);
    const timer = setTimeout(() => reject(new Error(`node-coap: no response to ${params.method} ${params.pathname} within ${timeoutMs} ms`)), timeoutMs);
    req.on('response', (res) => {
      clearTimeout(timer);
      resolve(res);
    });
    req.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    for (const [name, value] of Object.entries(options)) req.setOption(name, value);
    req.end(body);
  });
}

/**
 * One request: `params` are coap.request's (hostname, port, method, pathname, query, agent,
 * confirmable), `options` name → value. Resolves node-coap's response; `res.echoed` tells
 * whether it took an Echo round trip.
 */
async function nodeCoapRequest(params, { options = {}, body, timeoutMs = 5000 } = {}) {
  const res = await once(params, options, body, timeoutMs);
  const echo = res.options.find((o) => o.name === ECHO)?.value;
  if (res.code !== '4.01' || echo === undefined) return Object.assign(res, { echoed: false });
  const repeated = await once(params, { ...options, [ECHO]: echo }, body, timeoutMs);
  return Object.assign(repeated, { echoed: true });
}

module.exports = { nodeCoapRequest };
