/*
 * The device loop of the libcoap examples (posix-libcoap and esp-idf): log
 * in, read the server clock, observe the commands collection, create a sensor
 * document every period, apply the period a command sets, re-register the
 * observation when it ends or when the network changes. Every step is printed
 * on stdout as one line "<event> key=value ...".
 *
 * Runs on libcoap 4.3.x (Debian 12: 4.3.1; ESP-IDF espressif/coap: 4.3.5),
 * UDP without DTLS. Single-threaded: call everything from one thread, except
 * kiot_device_network_changed() and kiot_device_stop(), which only set flags
 * (safe from a signal handler or another task).
 */
#ifndef KIOT_LIBCOAP_H
#define KIOT_LIBCOAP_H

#include <stdint.h>

#include "kuzzle_iot.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
  const char *host;     /* server name or address */
  uint16_t port;        /* UDP port, 5683 by default */
  const char *username; /* auth:login with the local strategy ... */
  const char *password;
  const char *jwt;      /* ... or a ready token / API key (then no login) */
  const char *token_lifetime; /* auth:login's expiresIn ("1h", "90s"); NULL: the server's default */
  const char *index;    /* "iot" */
  const char *sensors;  /* collection of the reports: "sensors" */
  const char *commands; /* collection observed: "commands" */
  uint32_t period_ms;   /* reporting period, changed by commands */
  uint32_t max_time_ms; /* stop after this long (0: never) */
  uint32_t max_docs;    /* stop after this many documents (0: never) */
  int coap_log_level;   /* libcoap's log level (4: warnings) */
  /* DTLS-PSK (coaps://, usually port 5684) when psk_identity is set; libcoap must be built with a
   * DTLS library. Without jwt and username, no token at all: the plugin runs the device's requests
   * as the Kuzzle identity its PSK identity is mapped to. */
  const char *psk_identity;
  const char *psk_key;
  /* Reads the sensor: sets reading->temperature and ->humidity (uptime and ts are set by the
   * loop). NULL: kiot_simulate's made-up values. count: documents sent so far. */
  void (*read_sensor)(kiot_reading *reading, uint64_t uptime_ms, uint32_t count);
} kiot_device_config;

/* Runs until stopped, max_time_ms or max_docs; 0 on a normal end, 1 on a setup error. */
int kiot_device_run(const kiot_device_config *config);

/* The network changed (new address, reconnected Wi-Fi): open a new session and re-register. */
void kiot_device_network_changed(void);

/* Ends kiot_device_run() at its next step. */
void kiot_device_stop(void);

#ifdef __cplusplus
}
#endif

#endif /* KIOT_LIBCOAP_H */
