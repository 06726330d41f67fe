/* kuzzle_iot: see kuzzle_iot.h. */
#include "kuzzle_iot.h"

#include <string.h>

size_t kiot_login_body(uint8_t *buf, size_t cap, const char *username, const char *password) {
  kcbor_writer w;
  kcbor_writer_init(&w, buf, cap);
  kcbor_put_map(&w, 2);
  kcbor_put_cstr(&w, "username");
  kcbor_put_cstr(&w, username);
  kcbor_put_cstr(&w, "password");
  kcbor_put_cstr(&w, password);
  return kcbor_writer_finish(&w);
}

size_t kiot_reading_body(uint8_t *buf, size_t cap, const kiot_reading *reading) {
  kcbor_writer w;
  kcbor_writer_init(&w, buf, cap);
  kcbor_put_map(&w, 4);
  kcbor_put_cstr(&w, "temperature");
  kcbor_put_float(&w, reading->temperature);
  kcbor_put_cstr(&w, "humidity");
  kcbor_put_uint(&w, reading->humidity);
  kcbor_put_cstr(&w, "uptime");
  kcbor_put_uint(&w, reading->uptime);
  kcbor_put_cstr(&w, "ts");
  kcbor_put_uint(&w, reading->ts);
  return kcbor_writer_finish(&w);
}

void kiot_simulate(kiot_reading *reading, uint64_t uptime_ms, uint64_t now_ms, uint32_t count) {
  /* A slow triangle wave between 19.5 and 23.35 °C in steps of 0.05, never a whole degree
   * (so that a JSON reader still sees a fractional number), and a humidity in 40..49 %. */
  uint32_t step = count % 78;
  uint32_t tri = step < 39 ? step : 77 - step;
  reading->temperature = 19.5 + 0.1 * tri + 0.05;
  reading->humidity = 40 + count % 10;
  reading->uptime = uptime_ms / 1000;
  reading->ts = now_ms;
}

static kcbor_status compact_result(const uint8_t *payload, size_t len, kcbor_item *root) {
  kcbor_status status = kcbor_init(root, payload, len);
  if (status == KCBOR_OK && root->type != KCBOR_TYPE_MAP) status = KCBOR_ERR_TYPE;
  return status;
}

kcbor_status kiot_parse_login(const uint8_t *payload, size_t len, char *jwt, size_t jwt_cap, int64_t *expires_at) {
  kcbor_item root, item;
  kcbor_status status = compact_result(payload, len, &root);
  if (status == KCBOR_OK) status = kcbor_map_get(&root, "jwt", &item);
  if (status == KCBOR_OK) status = kcbor_copy_text(&item, jwt, jwt_cap);
  if (status != KCBOR_OK) return status;
  *expires_at = -1; /* an API key or a token that never expires */
  if (kcbor_map_get(&root, "expiresAt", &item) == KCBOR_OK) kcbor_get_int(&item, expires_at);
  return KCBOR_OK;
}

kcbor_status kiot_parse_now(const uint8_t *payload, size_t len, int64_t *now_ms) {
  kcbor_item root, item;
  kcbor_status status = compact_result(payload, len, &root);
  if (status == KCBOR_OK) status = kcbor_map_get(&root, "now", &item);
  if (status == KCBOR_OK) status = kcbor_get_int(&item, now_ms);
  return status;
}

kcbor_status kiot_parse_created(const uint8_t *payload, size_t len, char *id, size_t id_cap) {
  kcbor_item root, item;
  kcbor_status status = compact_result(payload, len, &root);
  if (status == KCBOR_OK) status = kcbor_map_get(&root, "_id", &item);
  if (status == KCBOR_OK) status = kcbor_copy_text(&item, id, id_cap);
  return status;
}

/* Copies a text item, truncated to fit (messages are for printing). */
static void copy_truncated(const kcbor_item *item, char *dst, size_t cap) {
  const char *text;
  size_t len;
  if (cap == 0 || kcbor_get_text(item, &text, &len) != KCBOR_OK) return;
  if (len >= cap) len = cap - 1;
  memcpy(dst, text, len);
  dst[len] = '\0';
}

void kiot_parse_error(const uint8_t *payload, size_t len, char *id, size_t id_cap, char *message, size_t message_cap) {
  kcbor_item root, item;
  if (id_cap > 0) id[0] = '\0';
  if (message_cap > 0) message[0] = '\0';
  if (compact_result(payload, len, &root) != KCBOR_OK) return;
  if (kcbor_map_get(&root, "id", &item) == KCBOR_OK) copy_truncated(&item, id, id_cap);
  if (kcbor_map_get(&root, "message", &item) == KCBOR_OK) copy_truncated(&item, message, message_cap);
}

kcbor_status kiot_parse_command(const uint8_t *payload, size_t len, kiot_command *command) {
  kcbor_item root, item;
  memset(command, 0, sizeof *command);
  kcbor_status status = compact_result(payload, len, &root);
  if (status != KCBOR_OK) return status;
  if (kcbor_map_get(&root, "action", &item) == KCBOR_OK) copy_truncated(&item, command->action, sizeof command->action);
  if (kcbor_find_path(&root, "result._id", &item) == KCBOR_OK) copy_truncated(&item, command->id, sizeof command->id);
  /* A delete notification has no _source: that is not an error, just no command. */
  if (kcbor_find_path(&root, "result._source.period", &item) == KCBOR_OK
      && kcbor_get_int(&item, &command->period_ms) == KCBOR_OK
      && command->period_ms >= KIOT_PERIOD_MIN_MS && command->period_ms <= KIOT_PERIOD_MAX_MS) {
    command->has_period = 1;
  }
  return KCBOR_OK;
}
