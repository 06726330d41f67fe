/**
 * A request payload that cannot be decoded. The message is meant for the device developer,
 * so the Kuzzle side can answer 4.00 Bad Request with it as is.
 */
export class PayloadError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'PayloadError';
  }
}

/**
 * A Content-Format this codec does not read or write. Distinct from PayloadError because it maps
 * to 4.15 Unsupported Content-Format (or 4.06 Not Acceptable for Accept), not 4.00.
 */
export class UnsupportedFormatError extends Error {
  constructor(readonly format: number) {
    super(`unsupported Content-Format ${format}`);
    this.name = 'UnsupportedFormatError';
  }
}
