/**
 * CoRE Link Format (RFC 6690) for `/.well-known/core`: serialises the links a
 * server describes and applies the single-attribute query filter of §4.1
 * (`?rt=kuzzle.*`, `?href=/api*`), where a trailing `*` matches a prefix.
 */

export interface Link {
  /** URI reference, e.g. "/api". */
  href: string;
  /** Target attributes; a list value is written space-separated, as `rt`, `if`, `ct` allow. */
  attributes?: Readonly<Record<string, string | number | readonly (string | number)[] | true>>;
}

// Attributes whose values RFC 6690 writes unquoted when they are a single token.
const TOKEN_ATTRIBUTES = new Set(['ct', 'sz', 'obs']);

function attributeText(name: string, value: string | number | readonly (string | number)[] | true): string {
  if (value === true) return name;
  const text = Array.isArray(value) ? value.join(' ') : String(value);
  const bare = TOKEN_ATTRIBUTES.has(name) && /^[0-9]+$/.test(text);
  return bare ? `${name}=${text}` : `${name}="${text.replace(/["\\]/g, '\\$&')}"`;
}

export function serializeLinks(links: readonly Link[]): string {
  return links
    .map((link) => {
      const attributes = Object.entries(link.attributes ?? {}).map(([name, value]) => attributeText(name, value));
      return [`<${link.href}>`, ...attributes].join(';');
    })
    .join(',');
}

function matches(candidate: string, pattern: string): boolean {
  return pattern.endsWith('*') ? candidate.startsWith(pattern.slice(0, -1)) : candidate === pattern;
}

/**
 * Links selected by the Uri-Query of a `/.well-known/core` request: at most one
 * `name=value` filter; any other query keeps every link.
 */
export function filterLinks(links: readonly Link[], query: readonly string[]): Link[] {
  if (query.length !== 1) return [...links];
  const eq = query[0].indexOf('=');
  if (eq <= 0) return [...links];
  const name = query[0].slice(0, eq);
  const pattern = query[0].slice(eq + 1);
  return links.filter((link) => {
    if (name === 'href') return matches(link.href, pattern);
    const value = link.attributes?.[name];
    if (value === undefined) return false;
    if (value === true) return pattern === '' || pattern === '*';
    const values = Array.isArray(value) ? value.map(String) : String(value).split(' ');
    return values.some((v) => matches(v, pattern));
  });
}
