/*
 * What every firmware example says to the Kuzzle CoAP plugin, in one place:
 * the request paths and queries, the CBOR bodies, and how the answers are
 * read. Every example (POSIX, ESP-IDF, Arduino) builds its requests from
 * these, so they send the same bytes; the Zephyr one mirrors them with zcbor.
 *
 * The requests (all CON, bodies CBOR, Content-Format 60, answers CBOR with
 * ?envelope=compact: only Kuzzle's `result`, or {status, id, message}):
 *
 *   POST /api/auth/login?strategy=local&envelope=compact
 *        {"username": U, "password": P}          -> {_id, jwt, expiresAt, ttl}
 *   POST /api/server/now?jwt=J&envelope=compact  -> {now}   (the device's clock)
 *   GET  /api/realtime/subscribe?index=I&collection=C&jwt=J&envelope=compact, Observe: 0
 *                                                -> {roomId, channel}, then notifications
 *        {type, action, event, scope, result: {_id, _source: {period, ...}}}
 *   POST /api/document/create?index=I&collection=S&jwt=J&envelope=compact
 *        {"temperature": float, "humidity": uint, "uptime": uint, "ts": uint64 ms}
 *                                                -> {_id, _version, _source}
 */
#ifndef KUZZLE_IOT_H
#define KUZZLE_IOT_H

#include <stddef.h>
#include <stdint.h>

#include "kcbor.h"

#ifdef __cplusplus
extern "C" {
#endif

#define KIOT_PATH_LOGIN "api/auth/login"
#define KIOT_PATH_NOW "api/server/now"
#define KIOT_PATH_SUBSCRIBE "api/realtime/subscribe"
#define KIOT_PATH_CREATE "api/document/create"
#define KIOT_QUERY_COMPACT "envelope=compact"
#define KIOT_QUERY_LOCAL "strategy=local"

/* CoAP Content-Format of CBOR (RFC 7049/8949). */
#define KIOT_CONTENT_FORMAT_CBOR 60

/* A command's period is accepted in this range (ms). */
#define KIOT_PERIOD_MIN_MS 100
#define KIOT_PERIOD_MAX_MS 86400000

typedef struct {
  double temperature; /* °C */
  uint32_t humidity;  /* % */
  uint64_t uptime;    /* s since boot */
  uint64_t ts;        /* ms since 1970 (server clock) */
} kiot_reading;

/* Request bodies: the encoded length, 0 if `cap` is too small. */
size_t kiot_login_body(uint8_t *buf, size_t cap, const char *username, const char *password);
size_t kiot_reading_body(uint8_t *buf, size_t cap, const kiot_reading *reading);

/* A made-up but plausible reading, the same on every example (no sensor wired). */
void kiot_simulate(kiot_reading *reading, uint64_t uptime_ms, uint64_t now_ms, uint32_t count);

/* Answers (compact envelope). Each returns KCBOR_OK or why it could not read it. */
kcbor_status kiot_parse_login(const uint8_t *payload, size_t len, char *jwt, size_t jwt_cap, int64_t *expires_at);
kcbor_status kiot_parse_now(const uint8_t *payload, size_t len, int64_t *now_ms);
kcbor_status kiot_parse_created(const uint8_t *payload, size_t len, char *id, size_t id_cap);
/* A compact error {status, id, message}: fills what it finds (empty strings otherwise). */
void kiot_parse_error(const uint8_t *payload, size_t len, char *id, size_t id_cap, char *message, size_t message_cap);

/* A notification: its action ("create", "update", ...) and result._source.period. */
typedef struct {
  char action[16];
  char id[48];
  int has_period;   /* _source.period is an integer in [KIOT_PERIOD_MIN_MS, KIOT_PERIOD_MAX_MS] */
  int64_t period_ms;
} kiot_command;

kcbor_status kiot_parse_command(const uint8_t *payload, size_t len, kiot_command *command);

#ifdef __cplusplus
}
#endif

#endif /* KUZZLE_IOT_H */
