/* kcbor: see kcbor.h. */
#include "kcbor.h"

#include <string.h>

enum {
  MAJOR_UINT = 0,
  MAJOR_NINT = 1,
  MAJOR_BYTES = 2,
  MAJOR_TEXT = 3,
  MAJOR_ARRAY = 4,
  MAJOR_MAP = 5,
  MAJOR_TAG = 6,
  MAJOR_SIMPLE = 7,
};

/* ------------------------------------------------------------------ writer */

void kcbor_writer_init(kcbor_writer *w, uint8_t *buf, size_t cap) {
  w->buf = buf;
  w->cap = cap;
  w->len = 0;
  w->status = KCBOR_OK;
}

size_t kcbor_writer_finish(const kcbor_writer *w) {
  return w->status == KCBOR_OK ? w->len : 0;
}

static bool reserve(kcbor_writer *w, size_t n) {
  if (w->status != KCBOR_OK) return false;
  if (n > w->cap - w->len) {
    w->status = KCBOR_ERR_OVERFLOW;
    return false;
  }
  return true;
}

static void put_byte(kcbor_writer *w, uint8_t b) {
  if (reserve(w, 1)) w->buf[w->len++] = b;
}

/* Big-endian, `size` bytes of `value`. */
static void put_be(kcbor_writer *w, uint64_t value, unsigned size) {
  if (!reserve(w, size)) return;
  for (unsigned i = 0; i < size; i++) w->buf[w->len++] = (uint8_t)(value >> (8 * (size - 1 - i)));
}

/* A head: major type and the shortest encoding of its argument. */
static void put_head(kcbor_writer *w, unsigned major, uint64_t arg) {
  uint8_t initial = (uint8_t)(major << 5);
  if (arg < 24) {
    put_byte(w, (uint8_t)(initial | arg));
  } else if (arg <= 0xff) {
    put_byte(w, initial | 24);
    put_be(w, arg, 1);
  } else if (arg <= 0xffff) {
    put_byte(w, initial | 25);
    put_be(w, arg, 2);
  } else if (arg <= 0xffffffffu) {
    put_byte(w, initial | 26);
    put_be(w, arg, 4);
  } else {
    put_byte(w, initial | 27);
    put_be(w, arg, 8);
  }
}

void kcbor_put_uint(kcbor_writer *w, uint64_t value) { put_head(w, MAJOR_UINT, value); }

void kcbor_put_negative(kcbor_writer *w, uint64_t n) { put_head(w, MAJOR_NINT, n); }

void kcbor_put_int(kcbor_writer *w, int64_t value) {
  if (value >= 0) put_head(w, MAJOR_UINT, (uint64_t)value);
  else put_head(w, MAJOR_NINT, (uint64_t)(-(value + 1))); /* -1 - value, without overflow */
}

/* float16 bits of a float32 given by its bits when exactly representable, else -1. */
static int32_t half_of_float_bits(uint32_t bits) {
  uint32_t sign = (bits >> 16) & 0x8000u;
  uint32_t exponent = (bits >> 23) & 0xffu;
  uint32_t mantissa = bits & 0x7fffffu;
  if (exponent == 0xff) return mantissa == 0 ? (int32_t)(sign | 0x7c00u) : -1; /* infinities */
  if (exponent == 0) return mantissa == 0 ? (int32_t)sign : -1; /* zeros; float32 subnormals are too small */
  if (exponent >= 113 && exponent <= 142) {
    /* float16 normal range 2^-14 .. 2^15: the 13 low mantissa bits must be zero. */
    if (mantissa & 0x1fffu) return -1;
    return (int32_t)(sign | ((exponent - 112) << 10) | (mantissa >> 13));
  }
  if (exponent >= 103 && exponent < 113) {
    /* float16 subnormal k * 2^-24 (k < 1024): no significand bit below 2^-24. */
    uint32_t significand = mantissa | 0x800000u;
    uint32_t shift = 126 - exponent;
    if (significand & ((1u << shift) - 1)) return -1;
    return (int32_t)(sign | (significand >> shift));
  }
  return -1;
}

void kcbor_put_float(kcbor_writer *w, double value) {
  if (value != value) { /* NaN: the canonical quiet NaN */
    put_byte(w, 0xf9);
    put_be(w, 0x7e00, 2);
    return;
  }
  float single = (float)value;
  if ((double)single == value) {
    uint32_t bits;
    memcpy(&bits, &single, sizeof bits);
    int32_t half = half_of_float_bits(bits);
    if (half >= 0) {
      put_byte(w, 0xf9);
      put_be(w, (uint64_t)half, 2);
    } else {
      put_byte(w, 0xfa);
      put_be(w, bits, 4);
    }
    return;
  }
  uint64_t bits;
  memcpy(&bits, &value, sizeof bits); /* assumes a 64-bit IEEE 754 double (not AVR) */
  put_byte(w, 0xfb);
  put_be(w, bits, 8);
}

void kcbor_put_bool(kcbor_writer *w, bool value) { put_byte(w, value ? 0xf5 : 0xf4); }

void kcbor_put_null(kcbor_writer *w) { put_byte(w, 0xf6); }

static void put_string(kcbor_writer *w, unsigned major, const void *data, size_t len) {
  put_head(w, major, len);
  if (!reserve(w, len)) return;
  if (len > 0) memcpy(w->buf + w->len, data, len);
  w->len += len;
}

void kcbor_put_text(kcbor_writer *w, const char *text, size_t len) { put_string(w, MAJOR_TEXT, text, len); }

void kcbor_put_cstr(kcbor_writer *w, const char *text) { put_string(w, MAJOR_TEXT, text, strlen(text)); }

void kcbor_put_bytes(kcbor_writer *w, const uint8_t *bytes, size_t len) { put_string(w, MAJOR_BYTES, bytes, len); }

void kcbor_put_map(kcbor_writer *w, size_t pairs) { put_head(w, MAJOR_MAP, pairs); }

void kcbor_put_array(kcbor_writer *w, size_t items) { put_head(w, MAJOR_ARRAY, items); }

/* ------------------------------------------------------------------ reader */

/* Reads the head at p and the extent of the whole item, checking everything
 * below it. On success fills `item` (start, end, type, arg, head_size). */
static kcbor_status parse_item(const uint8_t *p, const uint8_t *end, unsigned depth, kcbor_item *item) {
  if (p >= end) return KCBOR_ERR_MALFORMED;
  unsigned major = p[0] >> 5;
  unsigned info = p[0] & 0x1f;
  unsigned extra;
  if (info < 24) extra = 0;
  else if (info <= 27) extra = 1u << (info - 24);
  else if (info == 31) return major == MAJOR_SIMPLE ? KCBOR_ERR_MALFORMED : KCBOR_ERR_UNSUPPORTED; /* break / indefinite */
  else return KCBOR_ERR_MALFORMED; /* 28..30 are reserved */
  if ((size_t)(end - p) < 1 + extra) return KCBOR_ERR_MALFORMED;

  uint64_t arg = info;
  if (extra > 0) {
    arg = 0;
    for (unsigned i = 1; i <= extra; i++) arg = (arg << 8) | p[i];
  }
  item->start = p;
  item->arg = arg;
  item->head_size = (uint8_t)(1 + extra);
  const uint8_t *q = p + 1 + extra;
  size_t left = (size_t)(end - q);

  switch (major) {
    case MAJOR_UINT:
    case MAJOR_NINT:
      item->type = major == MAJOR_UINT ? KCBOR_TYPE_UINT : KCBOR_TYPE_NINT;
      break;
    case MAJOR_BYTES:
    case MAJOR_TEXT:
      if (arg > left) return KCBOR_ERR_MALFORMED;
      item->type = major == MAJOR_BYTES ? KCBOR_TYPE_BYTES : KCBOR_TYPE_TEXT;
      q += arg;
      break;
    case MAJOR_ARRAY:
    case MAJOR_MAP:
    case MAJOR_TAG: {
      if (depth >= KCBOR_MAX_DEPTH) return KCBOR_ERR_UNSUPPORTED;
      uint64_t children = major == MAJOR_ARRAY ? arg : major == MAJOR_MAP ? arg * 2 : 1;
      /* Every child takes at least one byte: this also bounds the loop below. */
      if ((major == MAJOR_MAP && arg > left) || children > left) return KCBOR_ERR_MALFORMED;
      for (uint64_t i = 0; i < children; i++) {
        kcbor_item child;
        kcbor_status status = parse_item(q, end, depth + 1, &child);
        if (status != KCBOR_OK) return status;
        q = child.end;
      }
      item->type = major == MAJOR_ARRAY ? KCBOR_TYPE_ARRAY : major == MAJOR_MAP ? KCBOR_TYPE_MAP : KCBOR_TYPE_TAG;
      break;
    }
    default: /* MAJOR_SIMPLE */
      if (info == 20) item->type = KCBOR_TYPE_FALSE;
      else if (info == 21) item->type = KCBOR_TYPE_TRUE;
      else if (info == 22) item->type = KCBOR_TYPE_NULL;
      else if (info == 23) item->type = KCBOR_TYPE_UNDEFINED;
      else if (info >= 25) item->type = KCBOR_TYPE_FLOAT;
      else return KCBOR_ERR_UNSUPPORTED; /* unassigned simple values */
      break;
  }
  item->end = q;
  return KCBOR_OK;
}

kcbor_status kcbor_init_prefix(kcbor_item *item, const uint8_t *buf, size_t len) {
  if (buf == NULL) return KCBOR_ERR_MALFORMED;
  return parse_item(buf, buf + len, 0, item);
}

kcbor_status kcbor_init(kcbor_item *item, const uint8_t *buf, size_t len) {
  kcbor_status status = kcbor_init_prefix(item, buf, len);
  if (status == KCBOR_OK && item->end != buf + len) return KCBOR_ERR_MALFORMED; /* trailing bytes */
  return status;
}

kcbor_status kcbor_get_uint(const kcbor_item *item, uint64_t *out) {
  if (item->type != KCBOR_TYPE_UINT) return KCBOR_ERR_TYPE;
  *out = item->arg;
  return KCBOR_OK;
}

kcbor_status kcbor_get_int(const kcbor_item *item, int64_t *out) {
  if (item->type != KCBOR_TYPE_UINT && item->type != KCBOR_TYPE_NINT) return KCBOR_ERR_TYPE;
  if (item->arg > (uint64_t)INT64_MAX) return KCBOR_ERR_RANGE;
  *out = item->type == KCBOR_TYPE_UINT ? (int64_t)item->arg : -1 - (int64_t)item->arg;
  return KCBOR_OK;
}

static float float_of_bits(uint32_t bits) {
  float f;
  memcpy(&f, &bits, sizeof f);
  return f;
}

/* float16 → float32 bits, exactly (every half is a float). */
static uint32_t float_bits_of_half(uint16_t half) {
  uint32_t sign = (uint32_t)(half & 0x8000u) << 16;
  uint32_t exponent = (half >> 10) & 0x1fu;
  uint32_t mantissa = half & 0x3ffu;
  if (exponent == 0x1f) return sign | 0x7f800000u | (mantissa << 13); /* infinity, NaN */
  if (exponent != 0) return sign | ((exponent + 112) << 23) | (mantissa << 13);
  if (mantissa == 0) return sign; /* zero */
  exponent = 113; /* subnormal: normalize */
  while (!(mantissa & 0x400u)) {
    mantissa <<= 1;
    exponent--;
  }
  return sign | (exponent << 23) | ((mantissa & 0x3ffu) << 13);
}

kcbor_status kcbor_get_double(const kcbor_item *item, double *out) {
  switch (item->type) {
    case KCBOR_TYPE_UINT:
      *out = (double)item->arg;
      return KCBOR_OK;
    case KCBOR_TYPE_NINT:
      *out = -1.0 - (double)item->arg;
      return KCBOR_OK;
    case KCBOR_TYPE_FLOAT:
      if (item->head_size == 3) {
        *out = float_of_bits(float_bits_of_half((uint16_t)item->arg));
      } else if (item->head_size == 5) {
        *out = float_of_bits((uint32_t)item->arg);
      } else {
        double d;
        memcpy(&d, &item->arg, sizeof d);
        *out = d;
      }
      return KCBOR_OK;
    default:
      return KCBOR_ERR_TYPE;
  }
}

kcbor_status kcbor_get_bool(const kcbor_item *item, bool *out) {
  if (item->type != KCBOR_TYPE_TRUE && item->type != KCBOR_TYPE_FALSE) return KCBOR_ERR_TYPE;
  *out = item->type == KCBOR_TYPE_TRUE;
  return KCBOR_OK;
}

bool kcbor_is_null(const kcbor_item *item) { return item->type == KCBOR_TYPE_NULL; }

kcbor_status kcbor_get_text(const kcbor_item *item, const char **text, size_t *len) {
  if (item->type != KCBOR_TYPE_TEXT) return KCBOR_ERR_TYPE;
  *text = (const char *)item->start + item->head_size;
  *len = (size_t)item->arg;
  return KCBOR_OK;
}

kcbor_status kcbor_copy_text(const kcbor_item *item, char *dst, size_t cap) {
  const char *text;
  size_t len;
  kcbor_status status = kcbor_get_text(item, &text, &len);
  if (status != KCBOR_OK) return status;
  if (len >= cap) return KCBOR_ERR_RANGE;
  memcpy(dst, text, len);
  dst[len] = '\0';
  return KCBOR_OK;
}

static bool text_equals_n(const kcbor_item *item, const char *text, size_t len) {
  return item->type == KCBOR_TYPE_TEXT && item->arg == len && memcmp(item->start + item->head_size, text, len) == 0;
}

bool kcbor_text_equals(const kcbor_item *item, const char *text) { return text_equals_n(item, text, strlen(text)); }

size_t kcbor_count(const kcbor_item *item) {
  return item->type == KCBOR_TYPE_ARRAY || item->type == KCBOR_TYPE_MAP ? (size_t)item->arg : 0;
}

kcbor_status kcbor_iter_init(const kcbor_item *container, kcbor_iter *it) {
  if (container->type != KCBOR_TYPE_ARRAY && container->type != KCBOR_TYPE_MAP) return KCBOR_ERR_TYPE;
  it->pos = container->start + container->head_size;
  it->end = container->end;
  it->remaining = (size_t)(container->type == KCBOR_TYPE_MAP ? container->arg * 2 : container->arg);
  return KCBOR_OK;
}

kcbor_status kcbor_iter_next(kcbor_iter *it, kcbor_item *child) {
  if (it->remaining == 0) return KCBOR_ERR_NOT_FOUND;
  kcbor_status status = parse_item(it->pos, it->end, 0, child);
  if (status != KCBOR_OK) return status;
  it->pos = child->end;
  it->remaining--;
  return KCBOR_OK;
}

static kcbor_status map_get_n(const kcbor_item *map, const char *key, size_t key_len, kcbor_item *value) {
  kcbor_iter it;
  kcbor_item k;
  if (map->type != KCBOR_TYPE_MAP) return KCBOR_ERR_TYPE;
  kcbor_status status = kcbor_iter_init(map, &it);
  while (status == KCBOR_OK && (status = kcbor_iter_next(&it, &k)) == KCBOR_OK) {
    status = kcbor_iter_next(&it, value);
    if (status == KCBOR_OK && text_equals_n(&k, key, key_len)) return KCBOR_OK;
  }
  return status;
}

kcbor_status kcbor_map_get(const kcbor_item *map, const char *key, kcbor_item *value) {
  return map_get_n(map, key, strlen(key), value);
}

kcbor_status kcbor_array_get(const kcbor_item *array, size_t index, kcbor_item *value) {
  kcbor_iter it;
  if (array->type != KCBOR_TYPE_ARRAY) return KCBOR_ERR_TYPE;
  if (index >= array->arg) return KCBOR_ERR_NOT_FOUND;
  kcbor_status status = kcbor_iter_init(array, &it);
  for (size_t i = 0; status == KCBOR_OK && i <= index; i++) status = kcbor_iter_next(&it, value);
  return status;
}

kcbor_status kcbor_find_path(const kcbor_item *root, const char *path, kcbor_item *value) {
  kcbor_item current = *root;
  for (;;) {
    const char *dot = strchr(path, '.');
    size_t len = dot ? (size_t)(dot - path) : strlen(path);
    kcbor_status status = map_get_n(&current, path, len, value);
    if (status != KCBOR_OK || dot == NULL) return status;
    current = *value;
    path = dot + 1;
  }
}

const char *kcbor_status_name(kcbor_status status) {
  switch (status) {
    case KCBOR_OK: return "ok";
    case KCBOR_ERR_OVERFLOW: return "buffer too small";
    case KCBOR_ERR_MALFORMED: return "malformed CBOR";
    case KCBOR_ERR_UNSUPPORTED: return "unsupported CBOR (indefinite length, too deep, simple value)";
    case KCBOR_ERR_TYPE: return "unexpected type";
    case KCBOR_ERR_RANGE: return "value out of range";
    case KCBOR_ERR_NOT_FOUND: return "not found";
  }
  return "unknown status";
}
