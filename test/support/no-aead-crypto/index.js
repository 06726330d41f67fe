'use strict';
// node-dtls-client loads node-aead-crypto only on Node < 10 or Electron: never here.
throw new Error('node-aead-crypto is not installed: node-dtls-client uses node:crypto on Node >= 10');
