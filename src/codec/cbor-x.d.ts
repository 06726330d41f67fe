// cbor-x ships typings for `import` only (its index.d.cts is missing from the package), so
// TypeScript refuses `require('cbor-x')` from CommonJS. This declares the part we use.
declare module 'cbor-x' {
  export interface Options {
    mapsAsObjects?: boolean;
    useRecords?: boolean;
    copyBuffers?: boolean;
    int64AsNumber?: boolean;
  }
  export class Decoder {
    constructor(options?: Options);
    decode(data: Uint8Array): unknown;
  }
}
