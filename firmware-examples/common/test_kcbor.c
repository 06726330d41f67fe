/*
 * Host tests of kcbor and kuzzle_iot.
 *
 *   ./test_kcbor                 unit tests; exit 0 and "kcbor tests: N passed, 0 failed"
 *   ./test_kcbor --vectors       "name hex" lines, compared by test/firmware/cbor-c.test.js
 *                                with the plugin's own encoder (dist/codec/cbor)
 *   ./test_kcbor --get HEX PATH  decodes HEX and prints the item at PATH ("" = root)
 *   ./test_kcbor --command HEX   kiot_parse_command on HEX
 *   ./test_kcbor --login HEX     kiot_parse_login on HEX
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kcbor.h"
#include "kuzzle_iot.h"

static int passed, failed;

#define CHECK(cond)                                                   \
  do {                                                                \
    if (cond) {                                                       \
      passed++;                                                       \
    } else {                                                          \
      failed++;                                                       \
      fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond); \
    }                                                                 \
  } while (0)

static int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* Hex string to bytes; -1 if invalid or too long. */
static long from_hex(const char *hex, uint8_t *out, size_t cap) {
  size_t n = strlen(hex);
  if (n % 2 || n / 2 > cap) return -1;
  for (size_t i = 0; i < n / 2; i++) {
    int hi = hex_value(hex[2 * i]), lo = hex_value(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return -1;
    out[i] = (uint8_t)(hi << 4 | lo);
  }
  return (long)(n / 2);
}

static void to_hex(const uint8_t *bytes, size_t len, char *out) {
  static const char digits[] = "0123456789abcdef";
  for (size_t i = 0; i < len; i++) {
    out[2 * i] = digits[bytes[i] >> 4];
    out[2 * i + 1] = digits[bytes[i] & 15];
  }
  out[2 * len] = '\0';
}

/* Encodes with `fill` into a fresh writer and compares with the expected hex. */
static int encodes_as(void (*fill)(kcbor_writer *), const char *expected) {
  uint8_t buf[512];
  char hex[1025];
  kcbor_writer w;
  kcbor_writer_init(&w, buf, sizeof buf);
  fill(&w);
  size_t len = kcbor_writer_finish(&w);
  to_hex(buf, len, hex);
  if (strcmp(hex, expected) != 0) {
    fprintf(stderr, "  got %s, want %s\n", hex, expected);
    return 0;
  }
  return 1;
}

/* ---------------------------------------------------------------- vectors */
/* The same values are written in cbor-c.test.js, encoded there by the plugin. */

static void v_sensor(kcbor_writer *w) {
  kcbor_put_map(w, 4);
  kcbor_put_cstr(w, "temperature");
  kcbor_put_float(w, 21.5);
  kcbor_put_cstr(w, "humidity");
  kcbor_put_uint(w, 40);
  kcbor_put_cstr(w, "uptime");
  kcbor_put_uint(w, 12);
  kcbor_put_cstr(w, "ts");
  kcbor_put_uint(w, 1700000000000ULL);
}

static void v_reading(kcbor_writer *w) {
  kiot_reading r;
  uint8_t body[64];
  kiot_simulate(&r, 12345678, 1700000000123ULL, 3);
  size_t len = kiot_reading_body(body, sizeof body, &r);
  if (len == 0 || w->cap - w->len < len) {
    w->status = KCBOR_ERR_OVERFLOW;
    return;
  }
  memcpy(w->buf + w->len, body, len);
  w->len += len;
}

static void v_login(kcbor_writer *w) {
  uint8_t body[64];
  size_t len = kiot_login_body(body, sizeof body, "sensor-1", "s3cret-\xc3\xa9");
  memcpy(w->buf + w->len, body, len);
  w->len += len;
}

static const uint64_t UINTS[] = {0, 1, 23, 24, 255, 256, 65535, 65536, 4294967295ULL, 4294967296ULL, 9007199254740991ULL};
static void v_uints(kcbor_writer *w) {
  kcbor_put_array(w, sizeof UINTS / sizeof UINTS[0]);
  for (size_t i = 0; i < sizeof UINTS / sizeof UINTS[0]; i++) kcbor_put_uint(w, UINTS[i]);
}

static const int64_t NINTS[] = {-1, -24, -25, -256, -257, -65536, -65537, -4294967296LL, -4294967297LL, -9007199254740991LL};
static void v_nints(kcbor_writer *w) {
  kcbor_put_array(w, sizeof NINTS / sizeof NINTS[0]);
  for (size_t i = 0; i < sizeof NINTS / sizeof NINTS[0]; i++) kcbor_put_int(w, NINTS[i]);
}

static void v_u64max(kcbor_writer *w) { kcbor_put_uint(w, UINT64_MAX); }
static void v_n64min(kcbor_writer *w) { kcbor_put_negative(w, UINT64_MAX); }
static void v_i64min(kcbor_writer *w) { kcbor_put_int(w, INT64_MIN); }
static void v_i64max(kcbor_writer *w) { kcbor_put_int(w, INT64_MAX); }

static void v_floats(kcbor_writer *w) {
  const double values[] = {0.5, -2.5, 1.1, 100000.5, 3.4028234663852886e38, 5.960464477539063e-8,
                           6.103515625e-5, 1e300, -0.0, INFINITY, -INFINITY, NAN, 1.5e-5, 65504.5,
                           ldexp(1.0, -140), 1e-40};
  kcbor_put_array(w, sizeof values / sizeof values[0]);
  for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) kcbor_put_float(w, values[i]);
}

static void v_texts(kcbor_writer *w) {
  char long_text[300];
  memset(long_text, 'x', 256);
  kcbor_put_array(w, 5);
  kcbor_put_cstr(w, "");
  kcbor_put_cstr(w, "a");
  kcbor_put_cstr(w, "\xc3\xa9\xe2\x9c\x93"); /* é✓ */
  kcbor_put_cstr(w, "abcdefghijklmnopqrstuvwx");
  kcbor_put_text(w, long_text, 256);
}

static void v_nested(kcbor_writer *w) {
  kcbor_put_map(w, 4);
  kcbor_put_cstr(w, "a");
  kcbor_put_array(w, 3);
  kcbor_put_uint(w, 1);
  kcbor_put_uint(w, 2);
  kcbor_put_map(w, 1);
  kcbor_put_cstr(w, "b");
  kcbor_put_null(w);
  kcbor_put_cstr(w, "c");
  kcbor_put_bool(w, true);
  kcbor_put_cstr(w, "d");
  kcbor_put_bool(w, false);
  kcbor_put_cstr(w, "e");
  kcbor_put_cstr(w, "x");
}

static void v_array24(kcbor_writer *w) {
  kcbor_put_array(w, 24);
  for (unsigned i = 0; i < 24; i++) kcbor_put_uint(w, i);
}

static void v_map24(kcbor_writer *w) {
  char key[8];
  kcbor_put_map(w, 24);
  for (unsigned i = 0; i < 24; i++) {
    snprintf(key, sizeof key, "k%u", i);
    kcbor_put_cstr(w, key);
    kcbor_put_uint(w, i);
  }
}

static const struct {
  const char *name;
  void (*fill)(kcbor_writer *);
} VECTORS[] = {
    {"sensor", v_sensor}, {"reading", v_reading}, {"login", v_login},   {"uints", v_uints},
    {"nints", v_nints},   {"u64max", v_u64max},   {"n64min", v_n64min}, {"i64min", v_i64min},
    {"i64max", v_i64max}, {"floats", v_floats},   {"texts", v_texts},   {"nested", v_nested},
    {"array24", v_array24}, {"map24", v_map24},
};

static int print_vectors(void) {
  uint8_t buf[1024];
  char hex[2049];
  for (size_t i = 0; i < sizeof VECTORS / sizeof VECTORS[0]; i++) {
    kcbor_writer w;
    kcbor_writer_init(&w, buf, sizeof buf);
    VECTORS[i].fill(&w);
    size_t len = kcbor_writer_finish(&w);
    if (len == 0) {
      fprintf(stderr, "vector %s: %s\n", VECTORS[i].name, kcbor_status_name(w.status));
      return 1;
    }
    to_hex(buf, len, hex);
    printf("%s %s\n", VECTORS[i].name, hex);
  }
  return 0;
}

/* ------------------------------------------------------------- CLI decode */

static void print_item(const kcbor_item *item) {
  int64_t i;
  uint64_t u;
  double d;
  const char *text;
  size_t len;
  switch (item->type) {
    case KCBOR_TYPE_UINT:
      kcbor_get_uint(item, &u);
      printf("uint %" PRIu64 "\n", u);
      break;
    case KCBOR_TYPE_NINT:
      if (kcbor_get_int(item, &i) == KCBOR_OK) printf("nint %" PRId64 "\n", i);
      else printf("nint -1-%" PRIu64 "\n", item->arg);
      break;
    case KCBOR_TYPE_FLOAT:
      kcbor_get_double(item, &d);
      printf("float%d %.17g\n", item->head_size == 3 ? 16 : item->head_size == 5 ? 32 : 64, d);
      break;
    case KCBOR_TYPE_TEXT:
      kcbor_get_text(item, &text, &len);
      printf("text %.*s\n", (int)len, text);
      break;
    case KCBOR_TYPE_BYTES: printf("bytes %" PRIu64 "\n", item->arg); break;
    case KCBOR_TYPE_MAP: printf("map %zu\n", kcbor_count(item)); break;
    case KCBOR_TYPE_ARRAY: printf("array %zu\n", kcbor_count(item)); break;
    case KCBOR_TYPE_TAG: printf("tag %" PRIu64 "\n", item->arg); break;
    case KCBOR_TYPE_TRUE: printf("true\n"); break;
    case KCBOR_TYPE_FALSE: printf("false\n"); break;
    case KCBOR_TYPE_NULL: printf("null\n"); break;
    case KCBOR_TYPE_UNDEFINED: printf("undefined\n"); break;
  }
}

static int cli(int argc, char **argv) {
  static uint8_t buf[65536];
  if (argc < 3) return 2;
  long len = from_hex(argv[2], buf, sizeof buf);
  if (len < 0) {
    printf("error bad hex\n");
    return 2;
  }
  if (strcmp(argv[1], "--get") == 0) {
    kcbor_item root, value;
    kcbor_status status = kcbor_init(&root, buf, (size_t)len);
    if (status == KCBOR_OK) {
      if (argc > 3 && argv[3][0] != '\0') status = kcbor_find_path(&root, argv[3], &value);
      else value = root;
    }
    if (status != KCBOR_OK) {
      printf("error %s\n", kcbor_status_name(status));
      return 1;
    }
    print_item(&value);
    return 0;
  }
  if (strcmp(argv[1], "--command") == 0) {
    kiot_command command;
    kcbor_status status = kiot_parse_command(buf, (size_t)len, &command);
    if (status != KCBOR_OK) {
      printf("error %s\n", kcbor_status_name(status));
      return 1;
    }
    printf("action=%s id=%s has_period=%d period_ms=%" PRId64 "\n", command.action, command.id, command.has_period,
           command.period_ms);
    return 0;
  }
  if (strcmp(argv[1], "--login") == 0) {
    char jwt[512];
    int64_t expires_at;
    kcbor_status status = kiot_parse_login(buf, (size_t)len, jwt, sizeof jwt, &expires_at);
    if (status != KCBOR_OK) {
      printf("error %s\n", kcbor_status_name(status));
      return 1;
    }
    printf("jwt=%s expires_at=%" PRId64 "\n", jwt, expires_at);
    return 0;
  }
  return 2;
}

/* ------------------------------------------------------------- unit tests */

static kcbor_status decode_hex(const char *hex, kcbor_item *item) {
  static uint8_t buf[4096];
  long len = from_hex(hex, buf, sizeof buf);
  if (len < 0) return KCBOR_ERR_MALFORMED;
  return kcbor_init(item, buf, (size_t)len);
}

static double decode_double(const char *hex) {
  kcbor_item item;
  double d = -12345.0;
  if (decode_hex(hex, &item) != KCBOR_OK || kcbor_get_double(&item, &d) != KCBOR_OK) return -12345.0;
  return d;
}

static void put_half_one(kcbor_writer *w) { kcbor_put_float(w, 1.0); }
static void put_third(kcbor_writer *w) { kcbor_put_float(w, 1.0 / 3.0); }
static void put_float32(kcbor_writer *w) { kcbor_put_float(w, 100000.0); }
static void put_subnormal_single(kcbor_writer *w) { kcbor_put_float(w, ldexp(1.0, -140)); }

static void test_writer(void) {
  CHECK(encodes_as(v_sensor, "a46b74656d7065726174757265f94d606868756d69646974791828667570"
                             "74696d650c6274731b0000018bcfe56800"));
  CHECK(encodes_as(put_half_one, "f93c00"));
  CHECK(encodes_as(put_third, "fb3fd5555555555555"));
  CHECK(encodes_as(put_float32, "fa47c35000"));
  CHECK(encodes_as(put_subnormal_single, "fa00000200")); /* a float32 subnormal stays float32 */
  CHECK(encodes_as(v_u64max, "1bffffffffffffffff"));
  CHECK(encodes_as(v_i64min, "3b7fffffffffffffff"));

  /* A too small buffer: nothing half-written is reported as success. */
  uint8_t small[8];
  kcbor_writer w;
  kcbor_writer_init(&w, small, sizeof small);
  kcbor_put_uint(&w, 1700000000000ULL); /* 9 bytes */
  CHECK(kcbor_writer_finish(&w) == 0);
  CHECK(w.status == KCBOR_ERR_OVERFLOW);
  kcbor_put_uint(&w, 1); /* sticky */
  CHECK(w.status == KCBOR_ERR_OVERFLOW);
  kcbor_writer_init(&w, small, sizeof small);
  kcbor_put_cstr(&w, "1234567"); /* exactly 8 bytes */
  CHECK(kcbor_writer_finish(&w) == 8);
  kcbor_writer_init(&w, small, 0);
  kcbor_put_null(&w);
  CHECK(kcbor_writer_finish(&w) == 0);

  uint8_t body[32];
  CHECK(kiot_login_body(body, sizeof body, "a-rather-long-user-name", "and-its-password") == 0);
  kiot_reading r = {21.5, 40, 12, 1700000000000ULL};
  CHECK(kiot_reading_body(body, sizeof body, &r) == 0); /* 46 bytes */
}

static void test_reader_numbers(void) {
  kcbor_item item;
  int64_t i;
  uint64_t u;
  double d;

  CHECK(decode_double("f93c00") == 1.0);
  CHECK(decode_double("f90001") == 5.960464477539063e-8); /* smallest half subnormal */
  CHECK(decode_double("f903ff") == 6.097555160522461e-5); /* largest half subnormal */
  CHECK(decode_double("f97bff") == 65504.0);
  CHECK(decode_double("f9c000") == -2.0);
  CHECK(decode_double("f97c00") == INFINITY);
  CHECK(decode_double("f9fc00") == -INFINITY);
  CHECK(isnan(decode_double("f97e00")));
  CHECK(decode_double("fa47c35000") == 100000.0);
  CHECK(decode_double("fb3ff199999999999a") == 1.1);
  CHECK(decode_double("1b0000018bcfe56800") == 1700000000000.0);
  CHECK(decode_double("38ff") == -256.0);
  d = -1;
  CHECK(decode_hex("f98000", &item) == KCBOR_OK && kcbor_get_double(&item, &d) == KCBOR_OK && d == 0.0 && signbit(d));

  CHECK(decode_hex("1b0000018bcfe56800", &item) == KCBOR_OK && kcbor_get_int(&item, &i) == KCBOR_OK && i == 1700000000000LL);
  CHECK(decode_hex("3b7fffffffffffffff", &item) == KCBOR_OK && kcbor_get_int(&item, &i) == KCBOR_OK && i == INT64_MIN);
  CHECK(decode_hex("3b8000000000000000", &item) == KCBOR_OK && kcbor_get_int(&item, &i) == KCBOR_ERR_RANGE);
  CHECK(decode_hex("1bffffffffffffffff", &item) == KCBOR_OK && kcbor_get_int(&item, &i) == KCBOR_ERR_RANGE);
  CHECK(kcbor_get_uint(&item, &u) == KCBOR_OK && u == UINT64_MAX);
  CHECK(decode_hex("20", &item) == KCBOR_OK && kcbor_get_int(&item, &i) == KCBOR_OK && i == -1);
  CHECK(kcbor_get_uint(&item, &u) == KCBOR_ERR_TYPE);
  CHECK(decode_hex("f94d60", &item) == KCBOR_OK && kcbor_get_int(&item, &i) == KCBOR_ERR_TYPE); /* a float is not an int */
  CHECK(decode_hex("6161", &item) == KCBOR_OK && kcbor_get_double(&item, &d) == KCBOR_ERR_TYPE);

  bool b = false;
  CHECK(decode_hex("f5", &item) == KCBOR_OK && kcbor_get_bool(&item, &b) == KCBOR_OK && b);
  CHECK(decode_hex("f4", &item) == KCBOR_OK && kcbor_get_bool(&item, &b) == KCBOR_OK && !b);
  CHECK(decode_hex("f6", &item) == KCBOR_OK && kcbor_is_null(&item));
  CHECK(decode_hex("f7", &item) == KCBOR_OK && item.type == KCBOR_TYPE_UNDEFINED);

  /* Round trips through the writer. */
  const int64_t ints[] = {0, 23, 24, -24, -25, 65535, -65537, 4294967296LL, -4294967297LL, INT64_MAX, INT64_MIN};
  for (size_t k = 0; k < sizeof ints / sizeof ints[0]; k++) {
    uint8_t buf[16];
    kcbor_writer w;
    kcbor_writer_init(&w, buf, sizeof buf);
    kcbor_put_int(&w, ints[k]);
    size_t len = kcbor_writer_finish(&w);
    CHECK(kcbor_init(&item, buf, len) == KCBOR_OK && kcbor_get_int(&item, &i) == KCBOR_OK && i == ints[k]);
  }
  const double floats[] = {0.1, 21.5, -3.75, 1e-300, 3.4028234663852886e38, 65504.0, 1.0 / 3.0, 123456.789};
  for (size_t k = 0; k < sizeof floats / sizeof floats[0]; k++) {
    uint8_t buf[16];
    kcbor_writer w;
    kcbor_writer_init(&w, buf, sizeof buf);
    kcbor_put_float(&w, floats[k]);
    size_t len = kcbor_writer_finish(&w);
    CHECK(kcbor_init(&item, buf, len) == KCBOR_OK && kcbor_get_double(&item, &d) == KCBOR_OK && d == floats[k]);
  }
}

static void test_reader_structure(void) {
  kcbor_item root, item;
  char text[8];
  const char *p;
  size_t len;
  int64_t i;

  /* {"result": {"_id": "c1", "_source": {"period": 200, "note": [1, "x"]}}, "action": "create"} */
  const char *notification =
      "a266726573756c74a2635f6964626331675f736f75726365a266706572696f6418c8646e6f74658201617866616374696f6e66637265617465";
  CHECK(decode_hex(notification, &root) == KCBOR_OK);
  CHECK(kcbor_count(&root) == 2);
  CHECK(kcbor_find_path(&root, "result._source.period", &item) == KCBOR_OK && kcbor_get_int(&item, &i) == KCBOR_OK && i == 200);
  CHECK(kcbor_find_path(&root, "result._id", &item) == KCBOR_OK && kcbor_text_equals(&item, "c1"));
  CHECK(kcbor_find_path(&root, "action", &item) == KCBOR_OK && kcbor_copy_text(&item, text, sizeof text) == KCBOR_OK &&
        strcmp(text, "create") == 0);
  CHECK(kcbor_copy_text(&item, text, 6) == KCBOR_ERR_RANGE); /* "create" + NUL needs 7 */
  CHECK(kcbor_get_text(&item, &p, &len) == KCBOR_OK && len == 6 && memcmp(p, "create", 6) == 0);
  CHECK(kcbor_find_path(&root, "result._source.missing", &item) == KCBOR_ERR_NOT_FOUND);
  CHECK(kcbor_find_path(&root, "result._source.period.deeper", &item) == KCBOR_ERR_TYPE);
  CHECK(kcbor_find_path(&root, "result._sourc", &item) == KCBOR_ERR_NOT_FOUND); /* no prefix match */
  CHECK(kcbor_find_path(&root, "result._source.note", &item) == KCBOR_OK && item.type == KCBOR_TYPE_ARRAY);
  kcbor_item second;
  CHECK(kcbor_array_get(&item, 1, &second) == KCBOR_OK && kcbor_text_equals(&second, "x"));
  CHECK(kcbor_array_get(&item, 2, &second) == KCBOR_ERR_NOT_FOUND);
  CHECK(kcbor_map_get(&item, "x", &second) == KCBOR_ERR_TYPE);

  /* Iteration over a map: keys and values alternate. */
  kcbor_iter it;
  kcbor_item key, value;
  int pairs = 0;
  CHECK(kcbor_iter_init(&root, &it) == KCBOR_OK);
  while (kcbor_iter_next(&it, &key) == KCBOR_OK && kcbor_iter_next(&it, &value) == KCBOR_OK) pairs++;
  CHECK(pairs == 2);

  /* Integer keys are skipped, not mistaken for text: {1: 2, "a": 3} */
  CHECK(decode_hex("a20102616103", &root) == KCBOR_OK && kcbor_map_get(&root, "a", &item) == KCBOR_OK &&
        kcbor_get_int(&item, &i) == KCBOR_OK && i == 3);
  /* A tag is walked over: {"t": 1(1700000000), "u": 1} */
  CHECK(decode_hex("a26174c11a6553f100617501", &root) == KCBOR_OK && kcbor_map_get(&root, "u", &item) == KCBOR_OK);
}

static void test_reader_rejects(void) {
  kcbor_item item;
  CHECK(decode_hex("", &item) == KCBOR_ERR_MALFORMED);
  CHECK(decode_hex("18", &item) == KCBOR_ERR_MALFORMED);                 /* truncated head */
  CHECK(decode_hex("1b00000000", &item) == KCBOR_ERR_MALFORMED);         /* truncated 64-bit */
  CHECK(decode_hex("6461626364", &item) == KCBOR_OK);
  CHECK(decode_hex("64616263", &item) == KCBOR_ERR_MALFORMED);           /* truncated text */
  CHECK(decode_hex("0000", &item) == KCBOR_ERR_MALFORMED);               /* trailing byte */
  CHECK(decode_hex("1c", &item) == KCBOR_ERR_MALFORMED);                 /* reserved info 28 */
  CHECK(decode_hex("ff", &item) == KCBOR_ERR_MALFORMED);                 /* break outside */
  CHECK(decode_hex("9f01ff", &item) == KCBOR_ERR_UNSUPPORTED);           /* indefinite array */
  CHECK(decode_hex("bf616101ff", &item) == KCBOR_ERR_UNSUPPORTED);       /* indefinite map */
  CHECK(decode_hex("7f6161ff", &item) == KCBOR_ERR_UNSUPPORTED);         /* indefinite text */
  CHECK(decode_hex("a16161", &item) == KCBOR_ERR_MALFORMED);             /* map missing a value */
  CHECK(decode_hex("9bffffffffffffffff00", &item) == KCBOR_ERR_MALFORMED); /* absurd count */
  CHECK(decode_hex("bbffffffffffffffff00", &item) == KCBOR_ERR_MALFORMED); /* absurd map count */
  CHECK(decode_hex("f0", &item) == KCBOR_ERR_UNSUPPORTED);               /* simple value 16 */
  CHECK(decode_hex("f820", &item) == KCBOR_ERR_UNSUPPORTED);             /* simple value 32 */

  /* Nesting: KCBOR_MAX_DEPTH arrays are fine, one more is refused. */
  uint8_t deep[KCBOR_MAX_DEPTH + 2];
  memset(deep, 0x81, sizeof deep);
  deep[KCBOR_MAX_DEPTH] = 0x00;
  CHECK(kcbor_init(&item, deep, KCBOR_MAX_DEPTH + 1) == KCBOR_OK);
  memset(deep, 0x81, sizeof deep);
  deep[KCBOR_MAX_DEPTH + 1] = 0x00;
  CHECK(kcbor_init(&item, deep, KCBOR_MAX_DEPTH + 2) == KCBOR_ERR_UNSUPPORTED);
  CHECK(kcbor_init(&item, NULL, 0) == KCBOR_ERR_MALFORMED);

  /* A prefix is fine when asked for. */
  const uint8_t two[] = {0x01, 0x02};
  CHECK(kcbor_init_prefix(&item, two, 2) == KCBOR_OK && item.end == two + 1);
}

static void test_kuzzle_iot(void) {
  uint8_t buf[256];
  kcbor_writer w;
  kcbor_item root, item;
  int64_t i;
  double d;

  /* Sensor body: four keys, the right CBOR types. */
  kiot_reading r;
  kiot_simulate(&r, 65000, 1700000000000ULL, 41);
  CHECK(r.uptime == 65 && r.ts == 1700000000000ULL && r.humidity == 41);
  CHECK(r.temperature > 19.5 && r.temperature < 23.5 && r.temperature != floor(r.temperature));
  size_t len = kiot_reading_body(buf, sizeof buf, &r);
  CHECK(len > 0 && kcbor_init(&root, buf, len) == KCBOR_OK && kcbor_count(&root) == 4);
  CHECK(kcbor_map_get(&root, "temperature", &item) == KCBOR_OK && item.type == KCBOR_TYPE_FLOAT &&
        kcbor_get_double(&item, &d) == KCBOR_OK && d == r.temperature);
  CHECK(kcbor_map_get(&root, "humidity", &item) == KCBOR_OK && item.type == KCBOR_TYPE_UINT);
  CHECK(kcbor_map_get(&root, "ts", &item) == KCBOR_OK && item.type == KCBOR_TYPE_UINT && item.head_size == 9);
  for (uint32_t count = 0; count < 200; count++) { /* never a whole degree */
    kiot_simulate(&r, 0, 0, count);
    if (r.temperature == floor(r.temperature)) CHECK(!"integral temperature");
  }

  /* Login answer. */
  kcbor_writer_init(&w, buf, sizeof buf);
  kcbor_put_map(&w, 4);
  kcbor_put_cstr(&w, "_id");
  kcbor_put_cstr(&w, "sensor-1");
  kcbor_put_cstr(&w, "jwt");
  kcbor_put_cstr(&w, "a.b.c");
  kcbor_put_cstr(&w, "expiresAt");
  kcbor_put_uint(&w, 1700003600000ULL);
  kcbor_put_cstr(&w, "ttl");
  kcbor_put_uint(&w, 3600000);
  len = kcbor_writer_finish(&w);
  char jwt[16];
  CHECK(kiot_parse_login(buf, len, jwt, sizeof jwt, &i) == KCBOR_OK && strcmp(jwt, "a.b.c") == 0 && i == 1700003600000LL);
  CHECK(kiot_parse_login(buf, len, jwt, 5, &i) == KCBOR_ERR_RANGE);

  /* server:now answer. */
  kcbor_writer_init(&w, buf, sizeof buf);
  kcbor_put_map(&w, 1);
  kcbor_put_cstr(&w, "now");
  kcbor_put_uint(&w, 1700000000042ULL);
  len = kcbor_writer_finish(&w);
  CHECK(kiot_parse_now(buf, len, &i) == KCBOR_OK && i == 1700000000042LL);
  CHECK(kiot_parse_now(buf, len - 1, &i) == KCBOR_ERR_MALFORMED);

  /* Compact error. */
  kcbor_writer_init(&w, buf, sizeof buf);
  kcbor_put_map(&w, 3);
  kcbor_put_cstr(&w, "status");
  kcbor_put_uint(&w, 401);
  kcbor_put_cstr(&w, "id");
  kcbor_put_cstr(&w, "security.token.invalid");
  kcbor_put_cstr(&w, "message");
  kcbor_put_cstr(&w, "Invalid token.");
  len = kcbor_writer_finish(&w);
  char id[64], message[8];
  kiot_parse_error(buf, len, id, sizeof id, message, sizeof message);
  CHECK(strcmp(id, "security.token.invalid") == 0 && strcmp(message, "Invalid") == 0); /* truncated */
  kiot_parse_error((const uint8_t *)"\xff", 1, id, sizeof id, message, sizeof message);
  CHECK(id[0] == '\0' && message[0] == '\0');

  /* Commands: in range, out of range, not an integer, deleted document. */
  const struct {
    double period; /* < 0: none */
    int as_float;
    int has_period;
  } cases[] = {{200, 0, 1}, {50, 0, 0}, {200.5, 1, 0}, {-1, 0, 0}, {86400000, 0, 1}, {86400001, 0, 0}};
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    kiot_command command;
    kcbor_writer_init(&w, buf, sizeof buf);
    kcbor_put_map(&w, 2);
    kcbor_put_cstr(&w, "action");
    kcbor_put_cstr(&w, cases[k].period < 0 ? "delete" : "create");
    kcbor_put_cstr(&w, "result");
    kcbor_put_map(&w, cases[k].period < 0 ? 1 : 2);
    kcbor_put_cstr(&w, "_id");
    kcbor_put_cstr(&w, "cmd-1");
    if (cases[k].period >= 0) {
      kcbor_put_cstr(&w, "_source");
      kcbor_put_map(&w, 1);
      kcbor_put_cstr(&w, "period");
      if (cases[k].as_float) kcbor_put_float(&w, cases[k].period);
      else kcbor_put_uint(&w, (uint64_t)cases[k].period);
    }
    len = kcbor_writer_finish(&w);
    CHECK(kiot_parse_command(buf, len, &command) == KCBOR_OK);
    CHECK(command.has_period == cases[k].has_period);
    CHECK(strcmp(command.id, "cmd-1") == 0);
    if (cases[k].has_period) CHECK(command.period_ms == (int64_t)cases[k].period);
  }
}

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "--vectors") == 0) return print_vectors();
  if (argc > 1) return cli(argc, argv);
  test_writer();
  test_reader_numbers();
  test_reader_structure();
  test_reader_rejects();
  test_kuzzle_iot();
  printf("kcbor tests: %d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
