/*
 * kcbor: a small CBOR (RFC 8949) writer and reader for devices talking to the
 * Kuzzle CoAP plugin. Plain C99, no malloc: the caller owns every buffer.
 *
 * Writer: preferred serialization (RFC 8949 section 4.2.2), the form the
 * plugin writes and TinyCBOR/zcbor read: shortest heads, definite lengths,
 * floats in the shortest width that holds the value exactly (half, single,
 * double). Maps and arrays take their item count up front.
 *
 *     uint8_t buf[64];
 *     kcbor_writer w;
 *     kcbor_writer_init(&w, buf, sizeof buf);
 *     kcbor_put_map(&w, 2);
 *     kcbor_put_cstr(&w, "temperature"); kcbor_put_float(&w, 21.5);
 *     kcbor_put_cstr(&w, "ts");          kcbor_put_uint(&w, 1700000000000ULL);
 *     size_t len = kcbor_writer_finish(&w);   // 0: the buffer was too small
 *
 * Reader: walks an encoded item in place (no copy, no tree). Definite lengths
 * only (what the plugin sends); indefinite lengths, reserved values and
 * truncated input are refused. Nesting is limited to KCBOR_MAX_DEPTH.
 *
 *     kcbor_item root, period;
 *     int64_t ms;
 *     if (kcbor_init(&root, payload, len) == KCBOR_OK
 *         && kcbor_find_path(&root, "result._source.period", &period) == KCBOR_OK
 *         && kcbor_get_int(&period, &ms) == KCBOR_OK) { ... }
 */
#ifndef KCBOR_H
#define KCBOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#ifndef KCBOR_MAX_DEPTH
#define KCBOR_MAX_DEPTH 16
#endif

typedef enum {
  KCBOR_OK = 0,
  KCBOR_ERR_OVERFLOW = -1,    /* writer: the buffer is too small */
  KCBOR_ERR_MALFORMED = -2,   /* reader: truncated or invalid encoding */
  KCBOR_ERR_UNSUPPORTED = -3, /* reader: indefinite length, too deep */
  KCBOR_ERR_TYPE = -4,        /* reader: the item is not of the asked type */
  KCBOR_ERR_RANGE = -5,       /* reader: the value does not fit the asked C type */
  KCBOR_ERR_NOT_FOUND = -6,   /* reader: no such key or index */
} kcbor_status;

/* ---- writer ---- */

typedef struct {
  uint8_t *buf;
  size_t cap;
  size_t len;
  kcbor_status status; /* sticky: the first error */
} kcbor_writer;

void kcbor_writer_init(kcbor_writer *w, uint8_t *buf, size_t cap);
/* The encoded length, or 0 if any write failed. */
size_t kcbor_writer_finish(const kcbor_writer *w);

void kcbor_put_uint(kcbor_writer *w, uint64_t value);
void kcbor_put_int(kcbor_writer *w, int64_t value);
/* Major type 1 with argument n: the integer -1 - n (down to -2^64). */
void kcbor_put_negative(kcbor_writer *w, uint64_t n);
/* Shortest of float16/32/64 that holds the value exactly; NaN as f97e00. */
void kcbor_put_float(kcbor_writer *w, double value);
void kcbor_put_bool(kcbor_writer *w, bool value);
void kcbor_put_null(kcbor_writer *w);
void kcbor_put_text(kcbor_writer *w, const char *text, size_t len);
void kcbor_put_cstr(kcbor_writer *w, const char *text);
void kcbor_put_bytes(kcbor_writer *w, const uint8_t *bytes, size_t len);
/* Heads of a map of `pairs` key/value pairs and an array of `items` items. */
void kcbor_put_map(kcbor_writer *w, size_t pairs);
void kcbor_put_array(kcbor_writer *w, size_t items);

/* ---- reader ---- */

typedef enum {
  KCBOR_TYPE_UINT,
  KCBOR_TYPE_NINT,
  KCBOR_TYPE_BYTES,
  KCBOR_TYPE_TEXT,
  KCBOR_TYPE_ARRAY,
  KCBOR_TYPE_MAP,
  KCBOR_TYPE_TAG,
  KCBOR_TYPE_FALSE,
  KCBOR_TYPE_TRUE,
  KCBOR_TYPE_NULL,
  KCBOR_TYPE_UNDEFINED,
  KCBOR_TYPE_FLOAT,
} kcbor_type;

/* One well-formed item: [start, end) in the caller's buffer. */
typedef struct {
  const uint8_t *start;
  const uint8_t *end;
  kcbor_type type;
  uint64_t arg;      /* the head's argument: value, length or pair/item count */
  uint8_t head_size; /* bytes of the head */
} kcbor_item;

/* Checks that buf holds exactly one well-formed item (no trailing bytes). */
kcbor_status kcbor_init(kcbor_item *item, const uint8_t *buf, size_t len);
/* Like kcbor_init, but trailing bytes are allowed (item->end tells where it ends). */
kcbor_status kcbor_init_prefix(kcbor_item *item, const uint8_t *buf, size_t len);

kcbor_status kcbor_get_uint(const kcbor_item *item, uint64_t *out);
/* Major types 0 and 1 within int64_t. */
kcbor_status kcbor_get_int(const kcbor_item *item, int64_t *out);
/* Floats of any width; integers too (converted, possibly rounded above 2^53). */
kcbor_status kcbor_get_double(const kcbor_item *item, double *out);
kcbor_status kcbor_get_bool(const kcbor_item *item, bool *out);
bool kcbor_is_null(const kcbor_item *item);
/* Points into the buffer: not NUL-terminated. */
kcbor_status kcbor_get_text(const kcbor_item *item, const char **text, size_t *len);
/* Copies a text string with a terminating NUL; KCBOR_ERR_RANGE if it does not fit. */
kcbor_status kcbor_copy_text(const kcbor_item *item, char *dst, size_t cap);
bool kcbor_text_equals(const kcbor_item *item, const char *text);

/* Number of pairs of a map, items of an array. */
size_t kcbor_count(const kcbor_item *item);
/* The value of the first pair whose key is the text string `key`. */
kcbor_status kcbor_map_get(const kcbor_item *map, const char *key, kcbor_item *value);
/* The i-th item of an array (0-based). */
kcbor_status kcbor_array_get(const kcbor_item *array, size_t index, kcbor_item *value);
/* Nested map lookup by a dot-separated path of text keys: "result._source.period". */
kcbor_status kcbor_find_path(const kcbor_item *root, const char *path, kcbor_item *value);

/* Iteration: kcbor_first() gives the first child (a key, for a map), then
 * kcbor_next() the following ones; `remaining` counts what is left. */
typedef struct {
  const uint8_t *pos;
  const uint8_t *end;
  size_t remaining;
} kcbor_iter;

kcbor_status kcbor_iter_init(const kcbor_item *container, kcbor_iter *it);
/* KCBOR_ERR_NOT_FOUND once the container is exhausted. */
kcbor_status kcbor_iter_next(kcbor_iter *it, kcbor_item *child);

const char *kcbor_status_name(kcbor_status status);

#ifdef __cplusplus
}
#endif

#endif /* KCBOR_H */
