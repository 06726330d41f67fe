'use strict';

/*
 * The Kuzzle application setup (child.js' `appSetup`) of every cluster node: it lets the test
 * process read the node's client connections over IPC, `ask('kuzzle-host:cluster:connections',
 * protocol)` → [{id, protocol, ips}] (what Kuzzle holds: the address a plugin gave it), then runs
 * the cluster's own appSetup module, if any (its path in KUZZLE_CLUSTER_APP_SETUP, set by node.js).
 */

const CONNECTIONS = 'kuzzle-host:cluster:connections';

module.exports = async function clusterNodeSetup(app) {
  app.pipe.register('kuzzle:state:live', async (payload) => {
    global.kuzzle.onAsk(CONNECTIONS, (protocol) => {
      const list = [];
      for (const connection of global.kuzzle.entryPoint._clients.values()) {
        if (protocol === undefined || connection.protocol === protocol) {
          list.push({ id: connection.id, protocol: connection.protocol, ips: [...connection.ips] });
        }
      }
      return list;
    });
    return payload;
  });
  const more = process.env.KUZZLE_CLUSTER_APP_SETUP;
  if (more) {
    const setup = require(more);
    await (typeof setup === 'function' ? setup : setup.appSetup)(app);
  }
};

module.exports.CONNECTIONS = CONNECTIONS;
