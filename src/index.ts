/**
 * Kuzzle loads protocols with `new (require(dir))()`: the module itself must be the class.
 */
import CoapProtocol = require('./kuzzle/CoapProtocol');

export = CoapProtocol;
