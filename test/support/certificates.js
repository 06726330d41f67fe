'use strict';
/**
 * A throw-away X.509 PKI for the coaps tests, made with the openssl command (Debian `openssl`):
 * an ECDSA P-256 CA, a server certificate for 127.0.0.1/localhost, client certificates signed by
 * the CA, and one self-signed "intruder" certificate the CA never signed. Files go in `dir`.
 */
const { execFileSync } = require('node:child_process');
const path = require('node:path');
const fs = require('node:fs');

function createTestPki(dir, { clients = ['device-42'] } = {}) {
  const f = (name) => path.join(dir, name);
  const ssl = (...args) => {
    try {
      return execFileSync('openssl', args, { cwd: dir, stdio: 'pipe', timeout: 15000 });
    } catch (error) {
      if (error.code === 'ENOENT') throw new Error('the openssl command is missing: apt-get install openssl');
      throw error;
    }
  };
  const ecKey = (name) => ssl('genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', f(name));
  ecKey('ca.key');
  ssl('req', '-x509', '-new', '-key', f('ca.key'), '-subj', '/CN=Test CA', '-days', '2', '-out', f('ca.crt'),
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
  const leaf = (name, subject, ext) => {
    ecKey(`${name}.key`);
    ssl('req', '-new', '-key', f(`${name}.key`), '-subj', subject, '-out', f(`${name}.csr`));
    fs.writeFileSync(f(`${name}.ext`), ext);
    ssl('x509', '-req', '-in', f(`${name}.csr`), '-CA', f('ca.crt'), '-CAkey', f('ca.key'), '-CAcreateserial',
      '-days', '2', '-out', f(`${name}.crt`), '-extfile', f(`${name}.ext`));
    return { cert: f(`${name}.crt`), key: f(`${name}.key`) };
  };
  const server = leaf('server', '/CN=localhost', 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n');
  const clientCerts = Object.fromEntries(clients.map((cn) => [cn, leaf(`client-${cn}`, `/O=Kuzzle CoAP tests/CN=${cn}`, 'extendedKeyUsage=clientAuth\n')]));
  ecKey('intruder.key');
  ssl('req', '-x509', '-new', '-key', f('intruder.key'), '-subj', '/CN=intruder', '-days', '2', '-out', f('intruder.crt'));
  return { ca: f('ca.crt'), server, clients: clientCerts, intruder: { cert: f('intruder.crt'), key: f('intruder.key') } };
}

module.exports = { createTestPki };
