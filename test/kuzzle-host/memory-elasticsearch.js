'use strict';

/*
 * In-memory emulation of an Elasticsearch 7 node, for Kuzzle's storage client.
 * FOR DEVELOPMENT AND TESTS ONLY: it keeps nothing (every document is lost when
 * the process ends), scores nothing, analyzes nothing and is not fast.
 *
 * It plugs into Kuzzle's own 7.x client (`sdk-es7`) through
 * @elastic/elasticsearch-mock: `createMemoryElasticsearch().Connection` goes to
 * `services.storageEngine.client.Connection`.
 *
 * Implemented (what Kuzzle 2.56 calls to boot and to serve index, collection,
 * document and security actions):
 *  - cluster: GET /, /_cluster/health, /_cluster/stats, /_cat/{indices,aliases,nodes}, /_stats
 *  - indices: exists/create/delete/get, aliases (get, exists, put, delete, /_aliases
 *    actions), _mapping and _settings (get/put), _refresh, _open, _close
 *  - documents: _doc (index with or without id, op_type=create, get, exists, delete),
 *    _create, _update (doc, upsert, doc_as_upsert), _mget, _bulk (index, create,
 *    update, delete), _delete_by_query, _update_by_query (no script, or Kuzzle's
 *    `ctx._source.<field> = params['<field>']` scripts)
 *  - _search (from/size, sort on plain fields, _id and _score, scroll and clear
 *    scroll, post_filter) and _count, with queries: match_all, match_none, ids,
 *    term, terms, match (OR / AND of lowercase words; exact on values without spaces,
 *    taken as keywords), match_phrase (substring),
 *    range (gt/gte/lt/lte), exists, prefix, wildcard, bool (must, filter, should,
 *    must_not, minimum_should_match). Fields are dotted paths; arrays match on
 *    any element; "<field>.keyword" reads "<field>".
 * Not emulated (answered with HTTP 400 so that a test fails loudly): aggregations,
 * suggest, collapse, search_after, other query types, other scripts. Ignored:
 * mappings (no type checks, dynamic:"strict" not enforced), analyzers, highlight,
 * _source filtering, refresh, routing, versioning preconditions.
 *
 * Errors are the 7.x client's `errors.ResponseError` with the bodies a real node
 * sends (Kuzzle parses them: 404 document/index missing, 409 create conflict, ...).
 */

const Module = require('node:module');
const path = require('node:path');
const crypto = require('node:crypto');

// Kuzzle's 7.x client copy: Kuzzle depends on "sdk-es7" (npm alias of
// @elastic/elasticsearch@7); a top-level @elastic/elasticsearch may be 8.x.
const kuzzleDir = path.dirname(require.resolve('kuzzle/package.json'));
const es7Path = require.resolve('sdk-es7', { paths: [kuzzleDir] });
const es7 = require(es7Path);
const { ResponseError } = es7.errors;

// The mock does `require('@elastic/elasticsearch')`, which resolves to the
// top-level copy. Redirect that one require to Kuzzle's 7.x copy while the mock
// loads: its Connection class and its `instanceof ResponseError` check must
// use the same module as Kuzzle's client.
function loadMock() {
  const mockPath = require.resolve('@elastic/elasticsearch-mock');
  const mockDir = path.dirname(mockPath) + path.sep;
  const resolve = Module._resolveFilename;
  Module._resolveFilename = function (request, parent, ...rest) {
    if (request === '@elastic/elasticsearch' && parent?.filename?.startsWith(mockDir)) {
      return es7Path;
    }
    return resolve.call(this, request, parent, ...rest);
  };
  let Mock;
  try {
    Mock = require(mockPath);
  } finally {
    Module._resolveFilename = resolve;
  }
  if (!(new Mock().getConnection().prototype instanceof es7.Connection)) {
    throw new Error('@elastic/elasticsearch-mock was loaded with another Elasticsearch client than Kuzzle\'s sdk-es7');
  }
  return Mock;
}

const SHARDS = { total: 1, successful: 1, failed: 0 };
const VERSION = { number: '7.17.0', lucene_version: '8.11.1', build_flavor: 'default' };

// ---- errors -----------------------------------------------------------------

function answer(statusCode, body) {
  return new ResponseError({ body, statusCode, headers: {}, warnings: null, meta: {} });
}

function esError(status, type, reason, extra = {}) {
  const cause = { type, reason, ...extra };
  return answer(status, { error: { root_cause: [cause], ...cause }, status });
}

const indexNotFound = (name) => esError(404, 'index_not_found_exception', `no such index [${name}]`,
  { 'resource.type': 'index_or_alias', 'resource.id': name, index_uuid: '_na_', index: name });
const notEmulated = (what) => esError(400, 'memory_elasticsearch_not_emulated',
  `memory-elasticsearch (dev/test emulation) does not emulate ${what}`);
const badQuery = (type) => esError(400, 'parsing_exception', `no [query] registered for [${type}]`);

// ---- document values and queries ----------------------------------------------

const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);

// All leaf values found at a dotted path; arrays (of values or objects) fan out.
function valuesAt(doc, field) {
  if (field === '_id') return [doc.id];
  const walk = (value, keys) => {
    if (value === undefined || value === null) return [];
    if (Array.isArray(value)) return value.flatMap((v) => walk(v, keys));
    if (keys.length === 0) return [value];
    if (!isObject(value)) return [];
    // Also accept "a.b" stored as a literal key.
    for (let i = keys.length; i > 0; i--) {
      const key = keys.slice(0, i).join('.');
      if (key in value) return walk(value[key], keys.slice(i));
    }
    return [];
  };
  const found = walk(doc.source, field.split('.'));
  if (found.length === 0 && field.endsWith('.keyword')) {
    return valuesAt(doc, field.slice(0, -'.keyword'.length));
  }
  return found;
}

const same = (a, b) => a === b || (!isObject(a) && !isObject(b) && String(a) === String(b));

function compare(a, b) {
  const na = typeof a === 'number' ? a : Number(a);
  const nb = typeof b === 'number' ? b : Number(b);
  if ((typeof a === 'number' || typeof b === 'number') && !Number.isNaN(na) && !Number.isNaN(nb)) {
    return na - nb;
  }
  if (typeof a === 'boolean' || typeof b === 'boolean') return Number(a === true || a === 'true') - Number(b === true || b === 'true');
  return String(a) < String(b) ? -1 : String(a) > String(b) ? 1 : 0;
}

const words = (text) => String(text).toLowerCase().split(/[^\p{L}\p{N}]+/u).filter(Boolean);

// The single "field: argument" pair of a term-like query (ignores boost etc.).
function fieldArg(arg, type) {
  const entries = Object.entries(arg || {}).filter(([k]) => !['boost', '_name'].includes(k));
  if (entries.length !== 1) throw esError(400, 'parsing_exception', `[${type}] query malformed`);
  return entries[0];
}

function globToRegExp(glob) {
  const escaped = glob.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.');
  return new RegExp(`^${escaped}$`);
}

function matches(query, doc) {
  if (!isObject(query) || Object.keys(query).length === 0) return true;
  const keys = Object.keys(query);
  if (keys.length > 1) throw esError(400, 'parsing_exception', `[${keys[0]}] malformed query, expected [END_OBJECT]`);
  const type = keys[0];
  const arg = query[type];
  switch (type) {
    case 'match_all': return true;
    case 'match_none': return false;
    case 'ids': return (arg.values || []).map(String).includes(doc.id);
    case 'term': {
      const [field, v] = fieldArg(arg, type);
      const value = isObject(v) ? v.value : v;
      return valuesAt(doc, field).some((x) => same(x, value));
    }
    case 'terms': {
      const [field, list] = fieldArg(arg, type);
      if (!Array.isArray(list)) throw notEmulated('terms lookup');
      return valuesAt(doc, field).some((x) => list.some((v) => same(x, v)));
    }
    case 'match': {
      const [field, v] = fieldArg(arg, type);
      const q = isObject(v) ? v.query : v;
      const and = isObject(v) && String(v.operator).toLowerCase() === 'and';
      return valuesAt(doc, field).some((x) => {
        if (typeof x !== 'string' || typeof q !== 'string') return same(x, q);
        // Mappings are not emulated: a value without spaces is taken as a keyword (exact), as
        // identifiers like usernames are mapped; "coap-user-1" must not match "coap-admin".
        if (!/\s/.test(x) && !/\s/.test(q)) return x === q;
        const have = new Set(words(x));
        const want = words(q);
        return and ? want.every((w) => have.has(w)) : want.some((w) => have.has(w));
      });
    }
    case 'match_phrase': {
      const [field, v] = fieldArg(arg, type);
      const phrase = words(isObject(v) ? v.query : v).join(' ');
      return valuesAt(doc, field).some((x) => ` ${words(x).join(' ')} `.includes(` ${phrase} `));
    }
    case 'range': {
      const [field, r] = fieldArg(arg, type);
      const ok = (x) => (r.gt === undefined || compare(x, r.gt) > 0)
        && (r.gte === undefined || compare(x, r.gte) >= 0)
        && (r.lt === undefined || compare(x, r.lt) < 0)
        && (r.lte === undefined || compare(x, r.lte) <= 0);
      return valuesAt(doc, field).some(ok);
    }
    case 'exists': return valuesAt(doc, arg.field).length > 0;
    case 'prefix': {
      const [field, v] = fieldArg(arg, type);
      const p = String(isObject(v) ? v.value : v);
      return valuesAt(doc, field).some((x) => String(x).startsWith(p));
    }
    case 'wildcard': {
      const [field, v] = fieldArg(arg, type);
      const re = globToRegExp(String(isObject(v) ? (v.value ?? v.wildcard) : v));
      return valuesAt(doc, field).some((x) => re.test(String(x)));
    }
    case 'bool': {
      const list = (v) => (v === undefined ? [] : Array.isArray(v) ? v : [v]);
      const must = [...list(arg.must), ...list(arg.filter)];
      const should = list(arg.should);
      if (!must.every((q) => matches(q, doc))) return false;
      if (list(arg.must_not).some((q) => matches(q, doc))) return false;
      const minimum = arg.minimum_should_match !== undefined
        ? Number.parseInt(arg.minimum_should_match, 10)
        : (must.length === 0 && should.length > 0 ? 1 : 0);
      return should.filter((q) => matches(q, doc)).length >= minimum;
    }
    default: throw badQuery(type);
  }
}

// Normalizes the sort forms ("f", {f: "desc"}, {f: {order}}, [...]) to [{field, desc}].
function sortSpec(sort) {
  if (sort === undefined) return [];
  const items = typeof sort === 'string' ? sort.split(',') : Array.isArray(sort) ? sort : [sort];
  return items.flatMap((item) => {
    if (typeof item === 'string') {
      const [field, order] = item.split(':');
      return [{ field, desc: order === 'desc' || (field === '_score' && order !== 'asc') }];
    }
    return Object.entries(item).map(([field, v]) => {
      const order = isObject(v) ? v.order : v;
      return { field, desc: order === 'desc' || (field === '_score' && order !== 'asc') };
    });
  });
}

function sortDocs(docs, sort) {
  const spec = sortSpec(sort).filter(({ field }) => field !== '_score'); // every score is 1
  if (spec.length === 0) return docs;
  const key = (doc, { field, desc }) => {
    const values = valuesAt(doc, field).sort(compare);
    return desc ? values[values.length - 1] : values[0];
  };
  return [...docs].sort((a, b) => {
    for (const s of spec) {
      const ka = key(a, s);
      const kb = key(b, s);
      if (ka === undefined && kb === undefined) continue;
      if (ka === undefined) return 1; // missing values last, both orders
      if (kb === undefined) return -1;
      const c = compare(ka, kb);
      if (c !== 0) return s.desc ? -c : c;
    }
    return 0;
  });
}

// ES partial update: objects merge recursively, everything else replaces.
function merge(target, patch) {
  const out = { ...target };
  for (const [k, v] of Object.entries(patch)) {
    out[k] = isObject(v) && isObject(out[k]) ? merge(out[k], v) : v;
  }
  return out;
}

function setPath(obj, dotted, value) {
  const keys = dotted.split('.');
  let cur = obj;
  for (const k of keys.slice(0, -1)) {
    if (!isObject(cur[k])) cur[k] = {};
    cur = cur[k];
  }
  cur[keys[keys.length - 1]] = value;
}

// ---- the store -------------------------------------------------------------------

class MemoryElasticsearch {
  constructor() {
    this.indices = new Map(); // name -> { name, uuid, aliases:Set, mappings, settings, docs:Map, seqNo }
    this.scrolls = new Map(); // scroll id -> { docs, offset, size }
    const Mock = loadMock();
    const mock = new Mock();
    mock.add({ method: ['GET', 'HEAD', 'POST', 'PUT', 'DELETE'], path: '/' }, (p) => this.handle(p));
    mock.add({ method: ['GET', 'HEAD', 'POST', 'PUT', 'DELETE'], path: '/*' }, (p) => this.handle(p));
    /** Connection class for `services.storageEngine.client.Connection` */
    this.Connection = mock.getConnection();
  }

  handle({ method, path: urlPath, querystring: qs, body }) {
    try {
      const seg = urlPath.split('/').filter(Boolean).map(decodeURIComponent);
      return this.route(method, seg, qs || {}, body || {}) ?? notEmulated(`${method} ${urlPath}`);
    } catch (error) {
      if (error instanceof ResponseError) return error;
      // Never throw from here: the mock would throw inside a timer, crashing Kuzzle.
      return esError(500, 'memory_elasticsearch_exception', `${error.message}`);
    }
  }

  route(method, seg, qs, body) {
    const [s0, s1, s2] = seg;
    if (seg.length === 0) return method === 'HEAD' ? '' : this.info();
    switch (s0) {
      case '_cluster': return s1 === 'health' ? this.health() : s1 === 'stats' ? this.clusterStats() : null;
      case '_cat': return this.cat(s1, s2);
      case '_aliases': return method === 'POST' ? this.updateAliases(body.actions || []) : null;
      case '_alias': return this.getAliases(method, '*', s1);
      case '_search':
        if (s1 === 'scroll') {
          const ids = s2 ? s2.split(',') : body.scroll_id || qs.scroll_id;
          return method === 'DELETE' ? this.clearScroll(ids) : this.scroll([].concat(ids)[0]);
        }
        return this.search('*', qs, body);
      case '_stats': return this.stats('*');
      default:
        if (s0.startsWith('_')) return this.onTarget(method, null, s0, seg.slice(1), qs, body);
        return this.onTarget(method, s0, s1, seg.slice(2), qs, body);
    }
  }

  onTarget(method, target, op, rest, qs, body) {
    switch (op) {
      case undefined:
        if (method === 'HEAD') return this.findIndices(target, { lenient: true }).length ? '' : answer(404, '');
        if (method === 'PUT') return this.createIndex(target, body);
        if (method === 'DELETE') return this.deleteIndices(target);
        if (method === 'GET') return this.getIndices(target);
        return null;
      case '_doc':
      case '_create': {
        const id = rest[0];
        if (method === 'GET') return this.get(target, id);
        if (method === 'HEAD') return this.exists(target, id);
        if (method === 'DELETE') return this.delete(target, id);
        const opType = op === '_create' ? 'create' : qs.op_type;
        return this.index(target, id, body, opType);
      }
      case '_update': return this.update(target, rest[0], body);
      case '_mget': return this.mget(target, body);
      case '_bulk': return this.bulk(target, Array.isArray(body) ? body : []);
      case '_search': return this.search(target, qs, body);
      case '_count': return { count: this.query(target, body.query).length, _shards: SHARDS };
      case '_delete_by_query': return this.deleteByQuery(target, body);
      case '_update_by_query': return this.updateByQuery(target, body, qs);
      case '_mapping': return method === 'PUT' ? this.putMapping(target, body) : this.getMapping(target);
      case '_settings': return method === 'PUT' ? this.putSettings(target, body) : this.getSettings(target);
      case '_alias':
      case '_aliases': return this.getAliases(method, target, rest[0]);
      case '_refresh':
      case '_flush': return { _shards: SHARDS };
      case '_open':
      case '_close': this.findIndices(target); return { acknowledged: true, shards_acknowledged: true };
      case '_stats': return this.stats(target);
      default: return null;
    }
  }

  // -- cluster

  info() {
    return { name: 'memory-elasticsearch', cluster_name: 'memory', cluster_uuid: 'memory', version: VERSION, tagline: 'You Know, for Search' };
  }

  health() {
    const n = this.indices.size;
    return {
      cluster_name: 'memory', status: 'green', timed_out: false, number_of_nodes: 1, number_of_data_nodes: 1,
      active_primary_shards: n, active_shards: n, relocating_shards: 0, initializing_shards: 0,
      unassigned_shards: 0, delayed_unassigned_shards: 0, number_of_pending_tasks: 0,
      number_of_in_flight_fetch: 0, task_max_waiting_in_queue_millis: 0, active_shards_percent_as_number: 100,
    };
  }

  clusterStats() {
    const docs = [...this.indices.values()].reduce((n, i) => n + i.docs.size, 0);
    return {
      cluster_name: 'memory', status: 'green',
      indices: { count: this.indices.size, docs: { count: docs, deleted: 0 }, store: { size: '0b', size_in_bytes: 0 } },
      nodes: { count: { total: 1, data: 1, master: 1 }, versions: [VERSION.number] },
    };
  }

  cat(what, names) {
    if (what === 'nodes') {
      return [{ ip: '127.0.0.1', 'heap.percent': '0', 'ram.percent': '0', cpu: '0', 'node.role': 'dimr', master: '*', name: 'memory-elasticsearch' }];
    }
    if (what === 'indices') {
      return this.findIndices(names || '*', { lenient: true }).map((i) => ({
        health: 'green', status: 'open', index: i.name, uuid: i.uuid, pri: '1', rep: '0',
        'docs.count': String(i.docs.size), 'docs.deleted': '0', 'store.size': '0b', 'pri.store.size': '0b',
      }));
    }
    if (what === 'aliases') {
      const patterns = (names || '*').split(',').map(globToRegExp);
      const rows = [];
      for (const i of this.indices.values()) {
        for (const alias of i.aliases) {
          if (patterns.some((re) => re.test(alias))) {
            rows.push({ alias, index: i.name, filter: '-', 'routing.index': '-', 'routing.search': '-', is_write_index: '-' });
          }
        }
      }
      return rows;
    }
    return null;
  }

  stats(target) {
    const indices = {};
    for (const i of this.findIndices(target, { lenient: true })) {
      const s = { docs: { count: i.docs.size, deleted: 0 }, store: { size_in_bytes: 0 } };
      indices[i.name] = { uuid: i.uuid, primaries: s, total: s };
    }
    return { _shards: SHARDS, _all: {}, indices };
  }

  // -- indices and aliases

  // Indices named by a comma list of names, aliases or wildcards.
  findIndices(target, { lenient = false } = {}) {
    const found = new Set();
    for (const name of String(target || '*').split(',')) {
      const wildcard = /[*?]/.test(name);
      const re = wildcard ? globToRegExp(name) : null;
      let hit = false;
      for (const i of this.indices.values()) {
        if (wildcard ? re.test(i.name) : i.name === name || i.aliases.has(name)) {
          found.add(i);
          hit = true;
        }
      }
      if (!hit && !wildcard && !lenient) throw indexNotFound(name);
    }
    return [...found];
  }

  // The single index written to through a name or alias (created on the fly, like ES).
  writeIndex(target) {
    const [index, more] = this.findIndices(target, { lenient: true });
    if (more) throw esError(400, 'illegal_argument_exception', `no write index is defined for alias [${target}]`);
    if (index) return index;
    this.createIndex(target, {});
    return this.indices.get(target);
  }

  createIndex(name, body) {
    if (this.findIndices(name, { lenient: true }).length) {
      const existing = this.findIndices(name)[0];
      throw esError(400, 'resource_already_exists_exception', `index [${name}/${existing.uuid}] already exists`, { index: name });
    }
    const settings = { ...(body.settings || {}) };
    this.indices.set(name, {
      name,
      uuid: crypto.randomBytes(16).toString('base64url'),
      aliases: new Set(Object.keys(body.aliases || {})),
      mappings: body.mappings || {},
      settings,
      docs: new Map(),
      seqNo: 0,
    });
    return { acknowledged: true, shards_acknowledged: true, index: name };
  }

  deleteIndices(target) {
    for (const i of this.findIndices(target)) this.indices.delete(i.name);
    return { acknowledged: true };
  }

  getIndices(target) {
    const out = {};
    for (const i of this.findIndices(target)) {
      out[i.name] = { aliases: this.aliasObject(i), mappings: i.mappings, settings: this.settingsOf(i) };
    }
    return out;
  }

  aliasObject(index) {
    return Object.fromEntries([...index.aliases].map((a) => [a, {}]));
  }

  getAliases(method, target, name) {
    if (method === 'PUT' || method === 'POST') {
      for (const i of this.findIndices(target)) i.aliases.add(name);
      return { acknowledged: true };
    }
    const re = globToRegExp(name || '*');
    const out = {};
    for (const i of this.findIndices(target, { lenient: target === '*' })) {
      const aliases = [...i.aliases].filter((a) => re.test(a));
      if (name && aliases.length === 0) continue;
      if (method === 'DELETE') aliases.forEach((a) => i.aliases.delete(a));
      out[i.name] = { aliases: Object.fromEntries(aliases.map((a) => [a, {}])) };
    }
    if (name && Object.keys(out).length === 0) {
      if (method === 'DELETE') throw esError(404, 'aliases_not_found_exception', `aliases [${name}] missing`);
      return answer(404, method === 'HEAD' ? '' : { error: `alias [${name}] missing`, status: 404 });
    }
    if (method === 'HEAD') return '';
    return method === 'DELETE' ? { acknowledged: true } : out;
  }

  updateAliases(actions) {
    for (const action of actions) {
      const [type, a] = Object.entries(action)[0];
      const targets = this.findIndices(a.index || (a.indices || []).join(','));
      for (const i of targets) {
        for (const alias of a.aliases || [a.alias]) {
          if (type === 'add') i.aliases.add(alias);
          else if (type === 'remove') i.aliases.delete(alias);
          else if (type === 'remove_index') this.indices.delete(i.name);
        }
      }
    }
    return { acknowledged: true };
  }

  getMapping(target) {
    return Object.fromEntries(this.findIndices(target).map((i) => [i.name, { mappings: i.mappings }]));
  }

  putMapping(target, body) {
    for (const i of this.findIndices(target)) i.mappings = merge(i.mappings, body);
    return { acknowledged: true };
  }

  settingsOf(i) {
    const { index: nested = {}, ...flat } = i.settings;
    const strings = (o) => Object.fromEntries(Object.entries(o).map(([k, v]) => [k, isObject(v) ? v : String(v)]));
    return {
      index: {
        number_of_shards: '1', number_of_replicas: '1', ...strings(flat), ...strings(nested),
        uuid: i.uuid, provided_name: i.name, creation_date: '0', version: { created: '7170099' },
      },
    };
  }

  getSettings(target) {
    return Object.fromEntries(this.findIndices(target).map((i) => [i.name, { settings: this.settingsOf(i) }]));
  }

  putSettings(target, body) {
    for (const i of this.findIndices(target)) i.settings = merge(i.settings, body.settings || body);
    return { acknowledged: true };
  }

  // -- documents

  meta(index, id, doc) {
    return { _index: index.name, _type: '_doc', _id: id, _version: doc.version, _seq_no: doc.seqNo, _primary_term: 1 };
  }

  put(index, id, source, created) {
    const previous = index.docs.get(id);
    const doc = { source, version: previous ? previous.version + 1 : 1, seqNo: index.seqNo++ };
    index.docs.set(id, doc);
    return { ...this.meta(index, id, doc), result: created ? 'created' : 'updated', _shards: SHARDS };
  }

  index(target, id, source, opType) {
    const index = this.writeIndex(target);
    const docId = id ?? crypto.randomBytes(15).toString('base64url'); // ES ids are 20 chars
    const existing = index.docs.get(docId);
    if (existing && opType === 'create') {
      throw esError(409, 'version_conflict_engine_exception',
        `[${docId}]: version conflict, document already exists (current version [${existing.version}])`,
        { index_uuid: index.uuid, shard: '0', index: index.name });
    }
    return this.put(index, docId, source, !existing);
  }

  get(target, id) {
    const index = this.findIndices(target)[0];
    const doc = index.docs.get(id);
    if (!doc) throw answer(404, { _index: index.name, _type: '_doc', _id: id, found: false });
    return { ...this.meta(index, id, doc), found: true, _source: doc.source };
  }

  exists(target, id) {
    const [index] = this.findIndices(target, { lenient: true });
    return index?.docs.has(id) ? '' : answer(404, '');
  }

  delete(target, id) {
    const index = this.findIndices(target)[0];
    const doc = index.docs.get(id);
    if (!doc) {
      throw answer(404, { _index: index.name, _type: '_doc', _id: id, _version: 1, result: 'not_found', _shards: SHARDS, _seq_no: index.seqNo, _primary_term: 1 });
    }
    index.docs.delete(id);
    return { ...this.meta(index, id, { version: doc.version + 1, seqNo: index.seqNo++ }), result: 'deleted', _shards: SHARDS };
  }

  update(target, id, body) {
    const index = this.findIndices(target)[0];
    const existing = index.docs.get(id);
    let result;
    if (existing) {
      if (body.script) throw notEmulated('update scripts');
      result = this.put(index, id, merge(existing.source, body.doc || {}), false);
    } else if (body.upsert || body.doc_as_upsert) {
      result = this.put(index, id, body.upsert || body.doc, true);
    } else {
      throw esError(404, 'document_missing_exception', `[_doc][${id}]: document missing`,
        { index_uuid: index.uuid, shard: '0', index: index.name });
    }
    const doc = index.docs.get(id);
    return { ...result, get: { _seq_no: doc.seqNo, _primary_term: 1, found: true, _source: doc.source } };
  }

  mget(target, body) {
    const specs = body.docs || (body.ids || []).map((_id) => ({ _id }));
    return {
      docs: specs.map(({ _id, _index }) => {
        const [index] = this.findIndices(_index || target, { lenient: true });
        const doc = index?.docs.get(_id);
        if (!doc) return { _index: index?.name ?? _index ?? target, _type: '_doc', _id, found: false };
        return { ...this.meta(index, _id, doc), found: true, _source: doc.source };
      }),
    };
  }

  bulk(target, lines) {
    const items = [];
    for (let i = 0; i < lines.length; i++) {
      const [action, m] = Object.entries(lines[i])[0];
      const source = action === 'delete' ? undefined : lines[++i];
      let item;
      try {
        const out = action === 'delete' ? this.delete(m._index || target, m._id)
          : action === 'update' ? this.update(m._index || target, m._id, source)
            : this.index(m._index || target, m._id, source, action === 'create' ? 'create' : m.op_type);
        item = { ...out, status: out.result === 'created' ? 201 : 200 };
      } catch (error) {
        if (!(error instanceof ResponseError)) throw error;
        const status = error.statusCode;
        item = error.body.error
          ? { _index: error.body.error.index ?? m._index ?? target, _type: '_doc', _id: m._id, status, error: error.body.error }
          : { ...error.body, status };
      }
      items.push({ [action]: item });
    }
    return { took: 0, errors: items.some((it) => Object.values(it)[0].status >= 400), items };
  }

  // -- search

  query(target, query) {
    const out = [];
    for (const index of this.findIndices(target)) {
      for (const [id, doc] of index.docs) {
        if (matches(query, { id, source: doc.source })) out.push({ index, id, doc, source: doc.source });
      }
    }
    return out;
  }

  hit({ index, id, doc }, sorted) {
    return { _index: index.name, _type: '_doc', _id: id, _score: sorted ? null : 1, _source: doc.source };
  }

  page(docs, from, size, sorted) {
    return {
      took: 0, timed_out: false, _shards: { ...SHARDS, skipped: 0 },
      hits: {
        total: { value: docs.length, relation: 'eq' },
        max_score: docs.length && !sorted ? 1 : null,
        hits: docs.slice(from, from + size).map((d) => this.hit(d, sorted)),
      },
    };
  }

  search(target, qs, body) {
    for (const key of ['aggs', 'aggregations', 'suggest', 'collapse', 'search_after']) {
      if (body[key] !== undefined) throw notEmulated(`"${key}" in searches`);
    }
    const int = (v, dflt) => (v === undefined || v === null || v === '' ? dflt : Number.parseInt(v, 10));
    const from = int(qs.from ?? body.from, 0);
    const size = int(qs.size ?? body.size, 10);
    const sort = qs.sort ?? body.sort;
    let docs = this.query(target, body.query);
    if (body.post_filter) docs = docs.filter((d) => matches(body.post_filter, d));
    docs = sortDocs(docs, sort);
    const sorted = sortSpec(sort).some(({ field }) => field !== '_score');
    if (!qs.scroll) return this.page(docs, from, size, sorted);
    const scrollId = crypto.randomBytes(24).toString('base64url');
    this.scrolls.set(scrollId, { docs: docs.slice(from), offset: size, size, sorted });
    return { _scroll_id: scrollId, ...this.page(docs.slice(from), 0, size, sorted) };
  }

  scroll(scrollId) {
    const state = this.scrolls.get(scrollId);
    if (!state) throw esError(404, 'search_context_missing_exception', `No search context found for id [${scrollId}]`);
    const out = this.page(state.docs, state.offset, state.size, state.sorted);
    state.offset += state.size;
    return { _scroll_id: scrollId, ...out };
  }

  clearScroll(scrollIds) {
    const ids = [].concat(scrollIds || []);
    const all = ids.includes('_all');
    const freed = all ? this.scrolls.size : ids.filter((id) => this.scrolls.has(id)).length;
    if (all) this.scrolls.clear();
    else ids.forEach((id) => this.scrolls.delete(id));
    return { succeeded: true, num_freed: freed };
  }

  deleteByQuery(target, body) {
    const docs = this.query(target, body.query);
    for (const { index, id } of docs) index.docs.delete(id);
    return { took: 0, timed_out: false, total: docs.length, deleted: docs.length, batches: 1, version_conflicts: 0, noops: 0, failures: [] };
  }

  updateByQuery(target, body, qs) {
    const docs = this.query(target, body.query);
    const script = body.script;
    // Only the script shape Kuzzle's bulkUpdateByQuery generates.
    if (script && !/^(ctx\._source\.[^=;]+ = params\['[^']+'\];)+$/.test(script.source || '')) {
      throw notEmulated('this update_by_query script');
    }
    for (const { index, id, doc } of docs) {
      const source = structuredClone(doc.source);
      for (const [field, value] of Object.entries(script?.params || {})) setPath(source, field, value);
      this.put(index, id, source, false);
    }
    if (qs.wait_for_completion === 'false') return { task: 'memory-elasticsearch:0' };
    return { took: 0, timed_out: false, total: docs.length, updated: docs.length, batches: 1, version_conflicts: 0, noops: 0, failures: [] };
  }
}

/** @returns {MemoryElasticsearch} a fresh, empty emulated node: use its `.Connection` */
function createMemoryElasticsearch() {
  return new MemoryElasticsearch();
}

module.exports = { createMemoryElasticsearch, MemoryElasticsearch };
