'use strict';

// The parent's side of child.js' IPC protocol, for index.js (the host) and cluster/node.js (a node):
//   parent -> child  {type:'start', options}, {type:'query'|'ask'|'coapStats', id, ...}
//   child -> parent  {type:'ready'|'failed'}, {type:'reply', id, result|error}
// Once Kuzzle is ready, the channel is ref'ed only while a request waits for its reply: an idle
// child does not keep this process alive.

function toError(serialized) {
  const error = new Error(serialized.message);
  Object.assign(error, { id: serialized.id, status: serialized.status, code: serialized.code, kuzzleStack: serialized.stack });
  return error;
}

/**
 * @param {import('node:child_process').ChildProcess} child child.js, just forked (with an 'ipc' stdio)
 * @param {string} [name='Kuzzle'] the child in error messages
 * @returns {{exited: Promise<{code, signal}>, start(options, bootTimeout): Promise<object>,
 *   query(req), ask(event, ...args), coapStats()}}
 */
function connectChild(child, name = 'Kuzzle') {
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));

  const pending = new Map();
  let nextId = 0;
  child.on('message', (message) => {
    const call = message?.type === 'reply' && pending.get(message.id);
    if (!call) return;
    pending.delete(message.id);
    if (pending.size === 0) child.channel?.unref();
    if (message.error) call.reject(toError(message.error));
    else call.resolve(message.result);
  });
  exited.then(() => {
    for (const call of pending.values()) call.reject(new Error(`${name} exited`));
    pending.clear();
  });
  const request = (message) => new Promise((resolve, reject) => {
    if (!child.connected) return reject(new Error(`${name} is not running`));
    const id = ++nextId;
    pending.set(id, { resolve, reject });
    child.channel.ref(); // keep this process alive until the reply
    child.send({ ...message, id });
  });

  /** Sends child.js its start options; resolves with its "ready" message (rejects on "failed", exit, timeout). */
  const start = async (options, bootTimeout) => {
    let timer;
    let onMessage;
    try {
      const ready = await new Promise((resolve, reject) => {
        timer = setTimeout(() => reject(new Error(`no "ready" after ${bootTimeout} ms`)), bootTimeout);
        onMessage = (message) => {
          if (message?.type === 'ready') resolve(message);
          if (message?.type === 'failed') reject(toError(message.error));
        };
        child.on('message', onMessage);
        exited.then(({ code, signal }) => reject(new Error(`Kuzzle exited during boot (${signal || `code ${code}`})`)));
        child.send({ type: 'start', options });
      });
      child.channel?.unref(); // idle from now on: see the header
      return ready;
    } finally {
      clearTimeout(timer);
      child.off('message', onMessage);
    }
  };

  return {
    exited,
    start,
    /** app.sdk.query() in the child (embedded SDK, all rights): Kuzzle's whole response */
    query: (req) => request({ type: 'query', request: req }),
    /** kuzzle.ask() in the child */
    ask: (event, ...args) => request({ type: 'ask', event, args }),
    /** The plugin's stats() snapshot. */
    coapStats: () => request({ type: 'coapStats' }),
  };
}

module.exports = { connectChild };
