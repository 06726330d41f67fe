/**
 * Deepest nesting of arrays and maps (and, when decoding, tags) that the CBOR codec accepts.
 * Real Kuzzle documents stay far below it; it turns a cyclic value or a hostile payload into a
 * clear error instead of a stack overflow. Encoding and decoding share it so that anything a
 * device sent can be echoed back.
 */
export const MAX_NESTING = 256;
