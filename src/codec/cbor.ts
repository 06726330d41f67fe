/** CBOR payloads (Content-Format 60): our encoder out, cbor-x behind a strict gate in. */
import { Decoder, type Options } from 'cbor-x';
import { checkCbor } from './cborCheck';
import { PayloadError } from './errors';

export { encodeCbor } from './cborEncoder';

// int64AsNumber is missing from cbor-x's typings. checkCbor only lets through 64-bit integers that
// a Number holds exactly, so with it cbor-x never returns a BigInt.
const options: Options & { int64AsNumber: boolean } = {
  mapsAsObjects: true,
  useRecords: false,
  int64AsNumber: true,
  // Byte strings are copied so a decoded body does not keep the whole datagram alive.
  copyBuffers: true,
};
const decoder = new Decoder(options);

/**
 * Decodes one CBOR item from a device into plain data: objects, arrays, strings, numbers,
 * booleans, null, undefined and Buffers for byte strings. Throws PayloadError otherwise.
 */
export function decodeCbor(buf: Buffer): unknown {
  checkCbor(buf);
  try {
    return decoder.decode(buf);
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    throw new PayloadError(`invalid CBOR payload: ${reason}`, { cause: error });
  }
}
