/*
 * Kuzzle CoAP sensor: ESP32, Arduino core, "CoAP simple library" (hirotakaster).
 *
 * The same job as the other examples (firmware-examples/README.md): log in (or use an API
 * key), read the server clock, observe the `commands` collection, create a `sensors`
 * document every period with a CBOR body, apply the period a command sets, register the
 * observation again when it ends or when Wi-Fi reconnects. Every step is printed on Serial
 * (115200 baud) as one line "<event> key=value ...", as the POSIX example prints them.
 *
 * Before building: run ../copy-common.sh (copies the shared CBOR code into src/common/),
 * then set the values under "Settings". See ../README.md.
 *
 * How this sketch works around the library:
 * - The library has no Observe and no Echo (RFC 9175), and writes options in the order they
 *   are added (it puts Content-Format after the Uri-Query options, which corrupts the option
 *   deltas): every request is written by hand (sendRequest) and sent on the library's UDP
 *   socket, which the library still reads.
 * - Echo: until the plugin has verified this device's address, it answers a large answer (the
 *   login's, with its JWT) or an Observe registration with 4.01 + an Echo option; the request is
 *   sent once more with that Echo value, and then gets its answer (the plugin does not run it
 *   twice). Later requests need no Echo: the address stays verified.
 * - The library hands only ACKs to its response callback and treats any other message as a
 *   request to route by Uri-Path. Notifications and separate responses have no Uri-Path: a
 *   handler registered for the empty path ("") receives them here; the library itself would
 *   drop them (or answer 4.04). They are acknowledged by hand (sendEmpty).
 * - The library does not retransmit: request() resends with the same message ID, so the
 *   plugin's deduplication never runs a request twice.
 */
#include <WiFi.h>
#include <WiFiUdp.h>
#include <coap-simple.h>
#include <esp_random.h>
#include <esp_timer.h>

#include "src/common/kcbor.h"
#include "src/common/kuzzle_iot.h"

// ---------------------------------------------------------------- settings
static const char *WIFI_SSID = "my-ssid";
static const char *WIFI_PASSWORD = "my-wifi-password";
static const IPAddress SERVER_IP(192, 168, 1, 10);  // the Kuzzle host
static const uint16_t SERVER_PORT = 5683;           // server.protocols.coap.port
static const char *USERNAME = "sensor-1";           // auth:login, local strategy
static const char *PASSWORD = "Sensor-Secret-1";
static const char *API_KEY = "";                    // a security:createApiKey token: then no login
static const char *INDEX_NAME = "iot";
static const char *SENSORS = "sensors";
static const char *COMMANDS = "commands";
static uint32_t periodMs = 5000;                    // until a command changes it

// ------------------------------------------------------------------ state
// 1024 bytes each way: requests carry the JWT (~160 bytes) in a Uri-Query, answers are
// 100-400 bytes. The library's default (128) is too small.
static const int COAP_BUFFER = 1024;
static WiFiUDP udp;
static Coap coap(udp, COAP_BUFFER);

static const uint8_t TYPE_CON = 0, TYPE_ACK = 2, TYPE_RST = 3;
static const uint8_t METHOD_GET = 1, METHOD_POST = 2;
static const uint8_t CODE_UNAUTHORIZED = (4 << 5) | 1;
static const uint8_t FORMAT_CBOR = 60;
static const uint16_t OPTION_OBSERVE = 6, OPTION_URI_PATH = 11, OPTION_CONTENT_FORMAT = 12, OPTION_URI_QUERY = 15,
                      OPTION_ECHO = 252;

// The Echo value of the server's last 4.01 + Echo, sent back once in the request's repetition.
static struct {
  uint8_t value[40];
  size_t len;
} echo;

static struct {
  bool active, done, challenged;
  uint8_t token[4];
  uint16_t mid;
  uint8_t code;
  uint8_t body[COAP_BUFFER];
  size_t len;
} pending;

static struct {
  bool registering, registered, challenged;
  uint8_t token[4];
  uint16_t mid;
  uint64_t retryAt;
  uint32_t backoffMs;
  uint32_t notifications;
} obs;

static char jwt[512];
static bool needLogin;
static bool clockSynced;
static int64_t clockOffsetMs;  // server time = nowMs() + offset
static uint32_t docs;
static uint64_t nextReportMs, lastReportMs, startMs;
static uint16_t nextMid;
static bool wifiUp;

static uint64_t nowMs() { return (uint64_t)(esp_timer_get_time() / 1000); }

static void newToken(uint8_t token[4]) {
  uint32_t r = esp_random();
  memcpy(token, &r, 4);
}

static bool sameToken(const CoapPacket &packet, const uint8_t token[4]) {
  return packet.tokenlen == 4 && packet.token != NULL && memcmp(packet.token, token, 4) == 0;
}

static const char *codeName(uint8_t code) {
  static char text[8];
  snprintf(text, sizeof text, "%d.%02d", code >> 5, code & 0x1f);
  return text;
}

static void sayError(const char *what, uint8_t code, const uint8_t *body, size_t len) {
  char id[64], message[128];
  kiot_parse_error(body, len, id, sizeof id, message, sizeof message);
  Serial.printf("%s code=%s id=%s message=\"%s\"\n", what, codeName(code), id[0] ? id : "-", message);
}

// An empty ACK or RST, written directly: the library cannot send one.
static void sendEmpty(IPAddress ip, int port, uint8_t type, uint16_t mid) {
  uint8_t message[4] = {(uint8_t)(0x40 | (type << 4)), 0, (uint8_t)(mid >> 8), (uint8_t)mid};
  udp.beginPacket(ip, port);
  udp.write(message, sizeof message);
  udp.endPacket();
}

// Keeps the Echo value of a 4.01 + Echo (the address is not verified yet); true if there is one.
static bool takeEcho(const CoapPacket &packet) {
  if (packet.code != CODE_UNAUTHORIZED) return false;
  for (int i = 0; i < packet.optionnum; i++) {
    if (packet.options[i].number != OPTION_ECHO || packet.options[i].length > sizeof echo.value) continue;
    memcpy(echo.value, packet.options[i].buffer, packet.options[i].length);
    echo.len = packet.options[i].length;
    return true;
  }
  return false;
}

// The answer to the pending request, piggybacked or separate.
static void takeAnswer(const CoapPacket &packet) {
  pending.challenged = takeEcho(packet);
  pending.code = packet.code;
  pending.len = packet.payloadlen < sizeof pending.body ? packet.payloadlen : sizeof pending.body;
  if (pending.len > 0) memcpy(pending.body, packet.payload, pending.len);
  pending.done = true;
}

// ------------------------------------------------------------ observation
static void scheduleRegistration() {
  obs.registering = obs.registered = false;
  obs.retryAt = nowMs() + obs.backoffMs;
  Serial.printf("observe retry_in_ms=%u\n", (unsigned)obs.backoffMs);
  obs.backoffMs = obs.backoffMs >= 30000 ? 60000 : obs.backoffMs * 2;
}

static void applyPeriod(const kiot_command &command) {
  uint32_t period = (uint32_t)command.period_ms;
  if (period == periodMs) {
    Serial.printf("period unchanged ms=%u command=%s\n", (unsigned)period, command.id);
    return;
  }
  Serial.printf("period changed old_ms=%u new_ms=%u command=%s\n", (unsigned)periodMs, (unsigned)period, command.id);
  periodMs = period;
  uint64_t now = nowMs();
  nextReportMs = lastReportMs + period > now ? lastReportMs + period : now;
}

// The registration's answer, a notification, or the final answer that ends the relation.
static void onObservation(CoapPacket &packet) {
  int observe = -1;
  for (int i = 0; i < packet.optionnum; i++) {
    if (packet.options[i].number != OPTION_OBSERVE) continue;
    observe = 0;
    for (int b = 0; b < packet.options[i].length; b++) observe = (observe << 8) | packet.options[i].buffer[b];
  }
  if ((packet.code >> 5) == 2 && observe >= 0) {
    if (obs.registering) {
      obs.registering = false;
      obs.registered = true;
      obs.backoffMs = 500;
      Serial.printf("observe registered seq=%d\n", observe);
      return;
    }
    kiot_command command;
    obs.notifications++;
    if (kiot_parse_command(packet.payload, packet.payloadlen, &command) != KCBOR_OK) {
      Serial.printf("notification seq=%d unreadable_bytes=%u\n", observe, (unsigned)packet.payloadlen);
      return;
    }
    if (!command.has_period) {
      Serial.printf("notification seq=%d action=%s id=%s period_ms=none\n", observe, command.action, command.id);
      return;
    }
    Serial.printf("notification seq=%d action=%s id=%s period_ms=%lld\n", observe, command.action, command.id,
                  (long long)command.period_ms);
    applyPeriod(command);
    return;
  }
  if (obs.registering && takeEcho(packet)) {
    obs.challenged = true;  // registerObservation sends it again with the Echo value
    return;
  }
  sayError(obs.registering ? "observe failed" : "observe ended", packet.code, packet.payload, packet.payloadlen);
  if (packet.code == CODE_UNAUTHORIZED && API_KEY[0] == '\0') needLogin = true;
  scheduleRegistration();
}

// ACKs: piggybacked answers (and empty ACKs announcing a separate answer).
static void onAck(CoapPacket &packet, IPAddress ip, int port) {
  (void)ip;
  (void)port;
  if (packet.code == 0) return;  // empty ACK: the answer follows as a CON, see onOtherMessage
  if (obs.registering && sameToken(packet, obs.token)) {
    onObservation(packet);
  } else if (pending.active && !pending.done && sameToken(packet, pending.token)) {
    takeAnswer(packet);
  }
}

// CON/NON messages without Uri-Path: notifications and separate answers.
static void onOtherMessage(CoapPacket &packet, IPAddress ip, int port) {
  bool forObservation = (obs.registering || obs.registered) && sameToken(packet, obs.token);
  bool forRequest = pending.active && !pending.done && sameToken(packet, pending.token) && (packet.code >> 5) >= 2;
  if (packet.type == TYPE_CON) sendEmpty(ip, port, forObservation || forRequest ? TYPE_ACK : TYPE_RST, packet.messageid);
  else if (!forObservation && !forRequest) sendEmpty(ip, port, TYPE_RST, packet.messageid);  // an old relation: end it
  if (forObservation) {
    onObservation(packet);
  } else if (forRequest) {
    takeAnswer(packet);
  }
}

// ---------------------------------------------------------------- requests
static size_t putOption(uint8_t *p, uint16_t *last, uint16_t number, const void *value, size_t len) {
  // Deltas and lengths are below 269 here: one extension byte at most.
  uint16_t delta = number - *last;
  uint8_t *start = p;
  *last = number;
  *p++ = (uint8_t)(((delta < 13 ? delta : 13) << 4) | (len < 13 ? len : 13));
  if (delta >= 13) *p++ = (uint8_t)(delta - 13);
  if (len >= 13) *p++ = (uint8_t)(len - 13);
  memcpy(p, value, len);
  return (size_t)(p + len - start);
}

// Puts each `separator`-separated part of text[0, end) as an option `number`.
static size_t putParts(uint8_t *p, uint16_t *last, uint16_t number, const char *text, const char *end, char separator) {
  size_t n = 0;
  while (text < end) {
    const char *stop = (const char *)memchr(text, separator, end - text);
    if (stop == NULL) stop = end;
    if (stop > text) n += putOption(p + n, last, number, text, stop - text);
    text = stop + 1;
  }
  return n;
}

// A CON request to the server: `url` is "path?query&query", `observe` adds Observe: 0, and the
// kept Echo value goes with it when there is one. False if it does not fit the buffer.
static bool sendRequest(uint8_t method, const uint8_t token[4], uint16_t mid, bool observe, const char *url,
                        const uint8_t *body, size_t len) {
  static uint8_t message[COAP_BUFFER];
  const char *query = strchr(url, '?');
  const char *end = url + strlen(url);
  if (query == NULL) query = end;
  // Header and token, then per option at most 3 header bytes; the payload marker and body.
  if (8 + 3 * 16 + (end - url) + echo.len + 1 + len > sizeof message) return false;
  size_t n = 0;
  uint16_t last = 0;
  message[n++] = 0x40 | 4;  // CoAP 1, CON, 4-byte token
  message[n++] = method;
  message[n++] = (uint8_t)(mid >> 8);
  message[n++] = (uint8_t)mid;
  memcpy(message + n, token, 4);
  n += 4;
  if (observe) n += putOption(message + n, &last, OPTION_OBSERVE, "", 0);  // Observe: 0 is the empty value
  n += putParts(message + n, &last, OPTION_URI_PATH, url, query, '/');
  if (len > 0) n += putOption(message + n, &last, OPTION_CONTENT_FORMAT, &FORMAT_CBOR, 1);
  if (query < end) n += putParts(message + n, &last, OPTION_URI_QUERY, query + 1, end, '&');
  if (echo.len > 0) n += putOption(message + n, &last, OPTION_ECHO, echo.value, echo.len);
  if (len > 0) {
    message[n++] = 0xff;
    memcpy(message + n, body, len);
    n += len;
  }
  udp.beginPacket(SERVER_IP, SERVER_PORT);
  udp.write(message, n);
  udp.endPacket();
  return true;
}

// One CON exchange: resent with the same message ID (the plugin's deduplication never runs a
// request twice) until answered.
static bool exchange(uint8_t method, const char *url, const uint8_t *body, size_t len) {
  newToken(pending.token);
  pending.mid = nextMid++;
  pending.active = true;
  pending.done = pending.challenged = false;
  for (int attempt = 0; attempt < 4 && !pending.done; attempt++) {
    if (!sendRequest(method, pending.token, pending.mid, false, url, body, len)) {
      Serial.printf("error request reason=too_large_for_buffer url_bytes=%u\n", (unsigned)strlen(url));
      break;
    }
    uint64_t until = nowMs() + (2000u << attempt);  // RFC 7252 back-off, without the random factor
    while (!pending.done && nowMs() < until) {
      coap.loop();
      delay(1);
    }
  }
  pending.active = false;
  return pending.done;
}

// A request, sent once more with the Echo value if the server answers 4.01 + Echo.
static bool request(uint8_t method, const char *url, const uint8_t *body, size_t len) {
  echo.len = 0;
  if (!exchange(method, url, body, len)) return false;
  if (!pending.challenged) return true;
  Serial.println("echo repeating request with the server's Echo value");
  bool answered = exchange(method, url, body, len);
  echo.len = 0;
  return answered;
}

static void buildUrl(char *url, size_t cap, const char *path, const char *collection, bool withJwt) {
  int n = snprintf(url, cap, "%s?", path);
  if (collection != NULL) n += snprintf(url + n, cap - n, "index=%s&collection=%s&", INDEX_NAME, collection);
  if (withJwt) n += snprintf(url + n, cap - n, "jwt=%s&", jwt);
  snprintf(url + n, cap - n, "%s", KIOT_QUERY_COMPACT);
}

// GET /api/realtime/subscribe?index=&collection=&jwt=&envelope=compact with Observe: 0; once
// more with the Echo value if the server answers 4.01 + Echo.
static void registerObservation() {
  static char url[sizeof jwt + 96];
  buildUrl(url, sizeof url, KIOT_PATH_SUBSCRIBE, COMMANDS, true);
  Serial.printf("observe register index=%s collection=%s\n", INDEX_NAME, COMMANDS);
  echo.len = 0;
  for (int round = 0; round < 2; round++) {
    newToken(obs.token);
    obs.mid = nextMid++;
    obs.registering = true;
    obs.registered = obs.challenged = false;
    for (int attempt = 0; attempt < 4 && obs.registering && !obs.challenged; attempt++) {
      sendRequest(METHOD_GET, obs.token, obs.mid, true, url, NULL, 0);
      uint64_t until = nowMs() + (2000u << attempt);
      while (obs.registering && !obs.challenged && nowMs() < until) {
        coap.loop();
        delay(1);
      }
    }
    if (!obs.challenged) break;
    Serial.println("echo repeating registration with the server's Echo value");
  }
  echo.len = 0;
  if (obs.registering) {
    Serial.println(obs.challenged ? "observe failed reason=echo_refused" : "observe failed reason=no_answer");
    scheduleRegistration();
  }
}

// ------------------------------------------------------------------- steps
static bool login() {
  uint8_t body[160];
  char url[64];
  size_t len = kiot_login_body(body, sizeof body, USERNAME, PASSWORD);
  snprintf(url, sizeof url, "%s?%s&%s", KIOT_PATH_LOGIN, KIOT_QUERY_LOCAL, KIOT_QUERY_COMPACT);
  Serial.printf("login user=%s\n", USERNAME);
  if (!request(METHOD_POST, url, body, len)) {
    Serial.println("login failed reason=no_answer");
    return false;
  }
  if ((pending.code >> 5) != 2) {
    sayError("login failed", pending.code, pending.body, pending.len);
    return false;
  }
  int64_t expiresAt;
  if (kiot_parse_login(pending.body, pending.len, jwt, sizeof jwt, &expiresAt) != KCBOR_OK) {
    Serial.println("login failed reason=bad_answer");
    return false;
  }
  Serial.printf("login ok user=%s expires_at=%lld jwt_bytes=%u\n", USERNAME, (long long)expiresAt, (unsigned)strlen(jwt));
  return true;
}

static bool syncClock() {
  static char url[sizeof jwt + 64];
  buildUrl(url, sizeof url, KIOT_PATH_NOW, NULL, true);
  uint64_t sent = nowMs();
  if (!request(METHOD_POST, url, NULL, 0)) {
    Serial.println("clock failed reason=no_answer");
    return false;
  }
  uint64_t received = nowMs();
  int64_t now;
  if ((pending.code >> 5) != 2 || kiot_parse_now(pending.body, pending.len, &now) != KCBOR_OK) {
    sayError("clock failed", pending.code, pending.body, pending.len);
    if (pending.code == CODE_UNAUTHORIZED && API_KEY[0] == '\0') needLogin = true;
    return false;
  }
  clockOffsetMs = now - (int64_t)(sent + received) / 2;
  clockSynced = true;
  Serial.printf("clock now=%lld rtt_ms=%u\n", (long long)now, (unsigned)(received - sent));
  return true;
}

static void report() {
  static char url[sizeof jwt + 96];
  kiot_reading reading;
  uint64_t uptimeMs = nowMs() - startMs;
  kiot_simulate(&reading, uptimeMs, (uint64_t)((int64_t)nowMs() + clockOffsetMs), docs);  // or read your sensor here
  uint8_t body[64];
  size_t len = kiot_reading_body(body, sizeof body, &reading);
  buildUrl(url, sizeof url, KIOT_PATH_CREATE, SENSORS, true);
  lastReportMs = nowMs();
  if (!request(METHOD_POST, url, body, len)) {
    Serial.println("report failed reason=no_answer");
    return;
  }
  if ((pending.code >> 5) != 2) {
    sayError("report failed", pending.code, pending.body, pending.len);
    if (pending.code == CODE_UNAUTHORIZED && API_KEY[0] == '\0') needLogin = true;
    return;
  }
  char id[64] = "-";
  kiot_parse_created(pending.body, pending.len, id, sizeof id);
  docs++;
  Serial.printf("report sent n=%u id=%s temperature=%.2f humidity=%u uptime=%llu ts=%llu period_ms=%u bytes=%u\n",
                (unsigned)docs, id, reading.temperature, (unsigned)reading.humidity, (unsigned long long)reading.uptime,
                (unsigned long long)reading.ts, (unsigned)periodMs, (unsigned)len);
}

// A new local port: the server sees a new endpoint, as after a real address change.
static void openSocket() {
  uint16_t localPort = 49152 + (esp_random() % 16000);
  udp.stop();
  coap.start(localPort);
  Serial.printf("session open local=%s:%u\n", WiFi.localIP().toString().c_str(), (unsigned)localPort);
}

// ------------------------------------------------------------ setup, loop
void setup() {
  Serial.begin(115200);
  delay(200);
  startMs = nowMs();
  nextMid = (uint16_t)esp_random();
  obs.backoffMs = 500;
  if (API_KEY[0] != '\0') snprintf(jwt, sizeof jwt, "%s", API_KEY);
  needLogin = API_KEY[0] == '\0';
  Serial.printf("start host=%s port=%u index=%s sensors=%s commands=%s period_ms=%u auth=%s\n",
                SERVER_IP.toString().c_str(), (unsigned)SERVER_PORT, INDEX_NAME, SENSORS, COMMANDS, (unsigned)periodMs,
                needLogin ? "login" : "jwt");
  coap.response(onAck);
  coap.server(onOtherMessage, "");
  WiFi.mode(WIFI_STA);
  WiFi.begin(WIFI_SSID, WIFI_PASSWORD);
}

void loop() {
  if (WiFi.status() != WL_CONNECTED) {
    if (wifiUp) Serial.println("network down: waiting for Wi-Fi");
    wifiUp = false;
    delay(100);
    return;
  }
  if (!wifiUp) {  // first connection, or back after a drop: new socket, register again
    wifiUp = true;
    Serial.printf("network changed: new session, re-registering (ip=%s)\n", WiFi.localIP().toString().c_str());
    openSocket();
    obs.registering = obs.registered = false;
    obs.retryAt = 0;
    clockSynced = false;
  }
  if (needLogin) {
    static uint32_t backoff = 500;
    if (!login()) {
      delay(backoff);
      backoff = backoff >= 30000 ? 60000 : backoff * 2;
      return;
    }
    backoff = 500;
    needLogin = false;
  }
  if (!clockSynced) {
    if (!syncClock()) delay(1000);
    return;
  }
  uint64_t now = nowMs();
  if (!obs.registering && !obs.registered && now >= obs.retryAt) registerObservation();
  if (now >= nextReportMs) {
    report();
    nextReportMs += periodMs;  // a fixed rate, unless it fell behind
    if (nextReportMs <= nowMs()) nextReportMs = nowMs() + periodMs;
  }
  coap.loop();
  delay(1);
}
