/*
 * The Kuzzle CoAP sensor on ESP-IDF: Wi-Fi station, then the same device loop as the POSIX
 * example (firmware-examples/common/kiot_libcoap.c) on espressif/coap (libcoap 4.3.5).
 *
 * A new IP address (first connection, or a reconnection after the Wi-Fi dropped) is a network
 * change: the loop opens a new session and registers its observation again.
 *
 * coaps by default (CONFIG_KUZZLE_DTLS_PSK): DTLS 1.2 with a pre-shared key, through mbedTLS. With
 * no username and no token configured, the PSK identity is the device's Kuzzle identity (the
 * plugin maps it to an API key): no login, and no request carries a jwt.
 * Settings: `idf.py menuconfig` -> "Kuzzle CoAP sensor".
 */
#include <string.h>

#include "esp_event.h"
#include "esp_log.h"
#include "esp_netif.h"
#include "esp_wifi.h"
#include "freertos/FreeRTOS.h"
#include "freertos/event_groups.h"
#include "freertos/task.h"
#include "kiot_libcoap.h"
#include "nvs_flash.h"

#ifndef CONFIG_COAP_CLIENT_SUPPORT
#error "CONFIG_COAP_CLIENT_SUPPORT must be enabled (sdkconfig.defaults does it)"
#endif

#ifdef CONFIG_KUZZLE_DTLS_PSK
/* What libcoap's Mbed TLS layer needs for a DTLS-PSK client (sdkconfig.defaults sets it all). */
#if !defined(CONFIG_MBEDTLS_TLS_CLIENT) || !defined(CONFIG_MBEDTLS_SSL_PROTO_DTLS)
#error "coaps needs CONFIG_MBEDTLS_TLS_CLIENT and CONFIG_MBEDTLS_SSL_PROTO_DTLS"
#endif
#if !defined(CONFIG_MBEDTLS_KEY_EXCHANGE_PSK)
#error "coaps needs CONFIG_MBEDTLS_PSK_MODES and CONFIG_MBEDTLS_KEY_EXCHANGE_PSK"
#endif
#if !defined(CONFIG_MBEDTLS_CCM_C) && !defined(CONFIG_MBEDTLS_GCM_C)
#error "the plugin's PSK suites are AES-128-CCM-8 and AES-128-GCM: enable CONFIG_MBEDTLS_CCM_C"
#endif
#endif

static const char *TAG = "kuzzle";
static EventGroupHandle_t wifi_events;
#define GOT_IP BIT0
static volatile bool device_running;

static void on_wifi_event(void *arg, esp_event_base_t base, int32_t id, void *data) {
  (void)arg;
  if (base == WIFI_EVENT && id == WIFI_EVENT_STA_START) {
    esp_wifi_connect();
  } else if (base == WIFI_EVENT && id == WIFI_EVENT_STA_DISCONNECTED) {
    ESP_LOGW(TAG, "Wi-Fi disconnected, reconnecting");
    xEventGroupClearBits(wifi_events, GOT_IP);
    esp_wifi_connect();
  } else if (base == IP_EVENT && id == IP_EVENT_STA_GOT_IP) {
    ip_event_got_ip_t *event = (ip_event_got_ip_t *)data;
    ESP_LOGI(TAG, "got IP " IPSTR, IP2STR(&event->ip_info.ip));
    xEventGroupSetBits(wifi_events, GOT_IP);
    /* Only sets a flag: the device task does the work. */
    if (device_running) kiot_device_network_changed();
  }
}

static void wifi_start(void) {
  wifi_events = xEventGroupCreate();
  ESP_ERROR_CHECK(esp_netif_init());
  ESP_ERROR_CHECK(esp_event_loop_create_default());
  esp_netif_create_default_wifi_sta();
  wifi_init_config_t init = WIFI_INIT_CONFIG_DEFAULT();
  ESP_ERROR_CHECK(esp_wifi_init(&init));
  ESP_ERROR_CHECK(esp_event_handler_register(WIFI_EVENT, ESP_EVENT_ANY_ID, on_wifi_event, NULL));
  ESP_ERROR_CHECK(esp_event_handler_register(IP_EVENT, IP_EVENT_STA_GOT_IP, on_wifi_event, NULL));
  wifi_config_t config = {0};
  strlcpy((char *)config.sta.ssid, CONFIG_KUZZLE_WIFI_SSID, sizeof config.sta.ssid);
  strlcpy((char *)config.sta.password, CONFIG_KUZZLE_WIFI_PASSWORD, sizeof config.sta.password);
  ESP_ERROR_CHECK(esp_wifi_set_mode(WIFI_MODE_STA));
  ESP_ERROR_CHECK(esp_wifi_set_config(WIFI_IF_STA, &config));
  ESP_ERROR_CHECK(esp_wifi_start());
  ESP_LOGI(TAG, "connecting to %s", CONFIG_KUZZLE_WIFI_SSID);
  xEventGroupWaitBits(wifi_events, GOT_IP, pdFALSE, pdTRUE, portMAX_DELAY);
}

static void device_task(void *arg) {
  (void)arg;
  static kiot_device_config config; /* static: the loop keeps a pointer to it */
  config.host = CONFIG_KUZZLE_HOST;
  config.port = CONFIG_KUZZLE_COAP_PORT;
  /* Empty: none. On coaps, no username and no jwt leave the PSK identity as the Kuzzle identity. */
  config.username = CONFIG_KUZZLE_USERNAME[0] != '\0' ? CONFIG_KUZZLE_USERNAME : NULL;
  config.password = CONFIG_KUZZLE_PASSWORD;
  config.jwt = CONFIG_KUZZLE_JWT; /* empty: log in (or, on coaps without a username, neither) */
  config.index = CONFIG_KUZZLE_INDEX;
  config.sensors = CONFIG_KUZZLE_SENSORS;
  config.commands = CONFIG_KUZZLE_COMMANDS;
  config.period_ms = CONFIG_KUZZLE_PERIOD_MS;
  config.coap_log_level = 4; /* warnings; libcoap logs only what CONFIG_COAP_DEBUGGING compiled in */
  config.read_sensor = NULL; /* simulated values: set a function reading your sensor here */
#ifdef CONFIG_KUZZLE_DTLS_PSK
  config.psk_identity = CONFIG_KUZZLE_PSK_IDENTITY;
  config.psk_key = CONFIG_KUZZLE_PSK_KEY;
  /* 32: Mbed TLS's default MBEDTLS_PSK_MAX_LEN; Mbed TLS refuses a longer key. */
  if (CONFIG_KUZZLE_PSK_IDENTITY[0] == '\0' || CONFIG_KUZZLE_PSK_KEY[0] == '\0' ||
      sizeof(CONFIG_KUZZLE_PSK_KEY) - 1 > 32) {
    ESP_LOGE(TAG, "coaps: set KUZZLE_PSK_IDENTITY and KUZZLE_PSK_KEY (1 to 32 bytes)");
    vTaskDelete(NULL);
  }
#endif
  for (;;) {
    device_running = true;
    int status = kiot_device_run(&config);
    device_running = false;
    ESP_LOGE(TAG, "device loop ended (%d), restarting in 10 s", status);
    vTaskDelay(pdMS_TO_TICKS(10000));
  }
}

void app_main(void) {
  esp_err_t err = nvs_flash_init();
  if (err == ESP_ERR_NVS_NO_FREE_PAGES || err == ESP_ERR_NVS_NEW_VERSION_FOUND) {
    ESP_ERROR_CHECK(nvs_flash_erase());
    err = nvs_flash_init();
  }
  ESP_ERROR_CHECK(err);
  wifi_start();
  /* libcoap is not thread-safe: every coap_* call happens in this one task. */
  xTaskCreate(device_task, "kuzzle_coap", 8192, NULL, 5, NULL);
}
