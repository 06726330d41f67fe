/*
 * Kuzzle CoAP sensor: ESP32, Arduino core, "CoAP simple library" (hirotakaster).
 *
 * The same job as the other examples (firmware-examples/README.md): log in (or use an API
 * key), read the server clock, observe the `commands` collection, create a `sensors`
 * document every period with a CBOR body, apply the period a command sets. Every step is
 * printed on Serial (115200 baud) as one line "<event> key=value ...", with the event names
 * of the POSIX example.
 *
 * Before building: run ../copy-common.sh (copies the shared CBOR code into src/common/),
 * then set the values under "Settings". See ../README.md.
 *
 * The loop never waits. Each turn, loop() reads what arrived (coap.loop(), whose callbacks hand
 * each answer to the step that started the exchange), retransmits what is due, hands the
 * exchanges that got no answer to their steps, and starts the steps whose time has come (a
 * back-off is a time to retry at). Two CON exchanges may be outstanding: one for the ordinary
 * requests (login, clock, report, one at a time), one for the observation (registration, then
 * the old relation's deregistration). Each keeps its encoded message and is retransmitted as
 * RFC 7252 §4.8 says: first after 2 to 3 s (random), then after twice as long each time, 4
 * retransmissions at most, always with the same message ID (the plugin's deduplication never
 * runs a request twice). An empty ACK stops the retransmissions; the separate answer then has
 * 60 s to come. An exchange that gets nothing (the server or the path is gone) opens a new
 * socket, as a network change does.
 *
 * Liveness of the observation: the registration's answer and the notifications carry Max-Age
 * (the plugin's default is 120 s; 60 s when absent), and the plugin sends a relation quiet for
 * 1/2 to 3/4 of it a heartbeat, a CON 2.03 Valid with an ETag and no payload: the sketch ACKs
 * it (which keeps the relation) and counts it as heard, not as a command. It registers again,
 * with a new token:
 * - after 1.25 x Max-Age + 2 s without a notification or a heartbeat ("observe renew
 *   reason=silent": a server restart, a lost relation);
 * - after logging in again, a minute before the JWT expires ("observe renew reason=token",
 *   so that Kuzzle links the subscription to the new token instead of the expiring one);
 * - when the server ends the relation, and on a network change (Wi-Fi back, a new local
 *   address: new socket, new registration).
 * The old relation keeps working until the renewal is answered, then is deregistered (GET with
 * Observe: 1 on its token). A notification on a token the sketch no longer knows gets an RST,
 * which ends that relation on the server.
 *
 * How this sketch works around the library:
 * - The library has no Observe and no Echo (RFC 9175), and writes options in the order they
 *   are added (it puts Content-Format after the Uri-Query options, which corrupts the option
 *   deltas): every request is written by hand (encodeRequest) and sent on the library's UDP
 *   socket, which the library still reads.
 * - Echo: until the plugin has verified this device's address, it answers a large answer (the
 *   login's, with its JWT) or an Observe registration with 4.01 + an Echo option; the request is
 *   sent once more with that Echo value, and then gets its answer (the plugin does not run it
 *   twice). Later requests need no Echo: the address stays verified.
 * - The library hands only ACKs to its response callback and treats any other message as a
 *   request to route by Uri-Path. Notifications, heartbeats, separate responses and RSTs have no
 *   Uri-Path: a handler registered for the empty path ("") receives them here; the library
 *   itself would drop them (or answer 4.04). They are acknowledged by hand (sendEmpty).
 * - The library does not retransmit: the sketch does, as above.
 *
 * Not verified: this sketch was syntax-checked and run in a simulation on a PC (stand-in
 * headers, a fake UDP socket and server), never compiled for nor run on an ESP32; what the
 * library does was read from its source (see ../README.md).
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

// ---------------------------------------------------------------- protocol
// 1024 bytes each way: requests carry the JWT (~160 bytes) in a Uri-Query, answers are
// 100-400 bytes. The library's default (128) is too small.
static const int COAP_BUFFER = 1024;

static const uint8_t TYPE_CON = 0, TYPE_ACK = 2, TYPE_RST = 3;
static const uint8_t METHOD_GET = 1, METHOD_POST = 2;
static const uint8_t CODE_VALID = (2 << 5) | 3, CODE_UNAUTHORIZED = (4 << 5) | 1;
static const uint8_t FORMAT_CBOR = 60;
static const uint16_t OPTION_OBSERVE = 6, OPTION_URI_PATH = 11, OPTION_CONTENT_FORMAT = 12, OPTION_MAX_AGE = 14,
                      OPTION_URI_QUERY = 15, OPTION_ECHO = 252;
static const int NO_OBSERVE = -1, OBSERVE_REGISTER = 0, OBSERVE_DEREGISTER = 1;

// RFC 7252 §4.8: the first timeout is random in [ACK_TIMEOUT, ACK_TIMEOUT x ACK_RANDOM_FACTOR (1.5)].
static const uint32_t ACK_TIMEOUT_MS = 2000, ACK_RANDOM_MS = 1000;
static const uint8_t MAX_RETRANSMIT = 4;
static const uint32_t SEPARATE_ANSWER_MS = 60000;  // after an empty ACK, how long the answer may take

static const uint32_t BACKOFF_FIRST_MS = 500, BACKOFF_MAX_MS = 60000;
static const uint32_t CLOCK_RETRY_MS = 1000;
static const int64_t REFRESH_BEFORE_MS = 60000;  // log in again this long before the JWT expires
static const uint32_t DEFAULT_MAX_AGE_S = 60;    // RFC 7252 §5.10.5: Max-Age when the option is absent

// ------------------------------------------------------------------ state
enum Step : uint8_t { STEP_NONE, STEP_LOGIN, STEP_CLOCK, STEP_REPORT, STEP_REGISTER, STEP_DEREGISTER };

// The Echo value of a 4.01 + Echo, sent back in the request's repetition.
struct Echo {
  uint8_t value[40];
  size_t len;
};
static const Echo NO_ECHO = {{0}, 0};

// One outstanding CON request, then its outcome (the answer, or why none came) for its step.
struct Exchange {
  Step step;  // the step that gets the outcome; STEP_NONE: the slot is free
  uint8_t message[COAP_BUFFER];
  size_t len;
  uint16_t mid;
  uint8_t token[4];
  bool echoed;  // it carries an Echo value: a second 4.01 + Echo is a refusal
  uint8_t transmissions;
  uint32_t timeoutMs;  // the next wait for an ACK, doubled at each retransmission
  uint64_t sentAt, resendAt, giveUpAt;
  bool acked;  // an empty ACK came: no more retransmissions, the answer follows
  bool answered;
  const char *failure;  // why no answer came
  uint8_t code;
  int32_t observe;  // -1: no Observe option
  uint32_t maxAgeS;
  Echo echo;
  uint8_t body[COAP_BUFFER];
  size_t bodyLen;
};

static WiFiUDP udp;
static Coap coap(udp, COAP_BUFFER);
static Exchange req;  // login, clock, report
static Exchange reg;  // the observation's registration, then the deregistration of the relation it replaced

// The observation of the commands collection.
static struct {
  bool active;  // a relation is established on `token`
  uint8_t token[4];
  const char *renewal;  // why the relation must be registered again, or NULL
  uint64_t retryAt;     // when not active: when to register
  uint32_t backoffMs;
  uint64_t heardAt;  // the last registration answer, notification or heartbeat
  uint32_t maxAgeS;
} obs;

static char jwt[512];
static char url[sizeof jwt + 128];  // the URL of the request being encoded
static int64_t jwtExpiresAt = -1;  // server clock, ms; -1: never
static bool needLogin, refreshing;
static uint64_t loginRetryAt;
static uint32_t loginBackoffMs = BACKOFF_FIRST_MS;
static bool clockSynced;
static uint64_t clockRetryAt;
static int64_t clockOffsetMs;  // server time = nowMs() + offset
static kiot_reading reading;   // of the report in flight
static size_t readingBytes;
static uint32_t docs;
static uint64_t nextReportMs, lastReportMs, startMs;
static uint16_t nextMid;
static int32_t lastConMid = -1;  // the server's last CON: when it comes again (our ACK was lost), only ACK it
static bool wifiUp, networkError;
static IPAddress localIp;

// ---------------------------------------------------------------- helpers
static uint64_t nowMs() { return (uint64_t)(esp_timer_get_time() / 1000); }

static bool usesLogin() { return API_KEY[0] == '\0'; }

static bool isSuccess(uint8_t code) { return (code >> 5) == 2; }

static uint32_t nextBackoff(uint32_t backoff) { return backoff >= BACKOFF_MAX_MS / 2 ? BACKOFF_MAX_MS : backoff * 2; }

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

// The value of an unsigned integer option (Observe, Max-Age), or `absent`.
static int64_t optionUint(const CoapPacket &packet, uint16_t number, int64_t absent) {
  for (int i = 0; i < packet.optionnum; i++) {
    if (packet.options[i].number != number) continue;
    uint32_t value = 0;
    for (int b = 0; b < packet.options[i].length && b < 4; b++) value = (value << 8) | packet.options[i].buffer[b];
    return value;
  }
  return absent;
}

// The Echo value of a 4.01 + Echo (the address is not verified yet); none otherwise.
static void takeEcho(const CoapPacket &packet, Echo &echo) {
  echo.len = 0;
  if (packet.code != CODE_UNAUTHORIZED) return;
  for (int i = 0; i < packet.optionnum; i++) {
    if (packet.options[i].number != OPTION_ECHO || packet.options[i].length > sizeof echo.value) continue;
    memcpy(echo.value, packet.options[i].buffer, packet.options[i].length);
    echo.len = packet.options[i].length;
    return;
  }
}

// An empty ACK or RST, written directly: the library cannot send one.
static void sendEmpty(IPAddress ip, int port, uint8_t type, uint16_t mid) {
  uint8_t message[4] = {(uint8_t)(0x40 | (type << 4)), 0, (uint8_t)(mid >> 8), (uint8_t)mid};
  udp.beginPacket(ip, port);
  udp.write(message, sizeof message);
  udp.endPacket();
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

// The CON request of `ex` (its message ID and token): `target` is "path?query&query", `observe`
// 0 or 1 adds that Observe value, an Echo value goes with it when there is one. False if it does
// not fit the buffer.
static bool encodeRequest(Exchange &ex, uint8_t method, int observe, const char *target, const uint8_t *body, size_t len,
                          const Echo &echo) {
  uint8_t *message = ex.message;
  const char *query = strchr(target, '?');
  const char *end = target + strlen(target);
  if (query == NULL) query = end;
  // Header and token, then per option at most 3 header bytes; the payload marker and body.
  if (8 + 3 * 16 + 1 + (end - target) + echo.len + 1 + len > sizeof ex.message) return false;
  size_t n = 0;
  uint16_t last = 0;
  message[n++] = 0x40 | 4;  // CoAP 1, CON, 4-byte token
  message[n++] = method;
  message[n++] = (uint8_t)(ex.mid >> 8);
  message[n++] = (uint8_t)ex.mid;
  memcpy(message + n, ex.token, 4);
  n += 4;
  if (observe >= 0) {
    uint8_t value = (uint8_t)observe;
    n += putOption(message + n, &last, OPTION_OBSERVE, &value, observe > 0 ? 1 : 0);  // 0 is the empty value
  }
  n += putParts(message + n, &last, OPTION_URI_PATH, target, query, '/');
  if (len > 0) n += putOption(message + n, &last, OPTION_CONTENT_FORMAT, &FORMAT_CBOR, 1);
  if (query < end) n += putParts(message + n, &last, OPTION_URI_QUERY, query + 1, end, '&');
  if (echo.len > 0) n += putOption(message + n, &last, OPTION_ECHO, echo.value, echo.len);
  if (len > 0) {
    message[n++] = 0xff;
    memcpy(message + n, body, len);
    n += len;
  }
  ex.len = n;
  return true;
}

static void transmit(Exchange &ex, uint64_t now) {
  udp.beginPacket(SERVER_IP, SERVER_PORT);
  udp.write(ex.message, ex.len);
  udp.endPacket();
  ex.transmissions++;
  ex.resendAt = now + ex.timeoutMs;
  ex.timeoutMs *= 2;
}

// Starts a CON exchange for `step` on the slot `ex`: sent now, retransmitted by poll(). `token`
// NULL: a new one. A request too large for the buffer fails at once, like a lost one.
static void startExchange(Exchange &ex, Step step, uint8_t method, int observe, const uint8_t *token, const char *target,
                          const uint8_t *body, size_t len, const Echo &echo) {
  uint32_t fresh = esp_random();
  ex.step = step;
  ex.mid = nextMid++;
  memcpy(ex.token, token != NULL ? token : (const uint8_t *)&fresh, 4);
  ex.echoed = echo.len > 0;
  ex.transmissions = 0;
  ex.timeoutMs = ACK_TIMEOUT_MS + esp_random() % (ACK_RANDOM_MS + 1);
  ex.acked = ex.answered = false;
  ex.failure = NULL;
  ex.sentAt = nowMs();
  if (!encodeRequest(ex, method, observe, target, body, len, echo)) {
    Serial.printf("error request reason=too_large_for_buffer url_bytes=%u\n", (unsigned)strlen(target));
    ex.failure = "too_large_for_buffer";
    return;
  }
  transmit(ex, ex.sentAt);
}

static bool waiting(const Exchange &ex) { return ex.step != STEP_NONE && !ex.answered && ex.failure == NULL; }

static void dispatch(Exchange &ex);

// Retransmits when the ACK is late; gives up after MAX_RETRANSMIT retransmissions, or when the
// separate answer an empty ACK announced does not come.
static void poll(Exchange &ex, uint64_t now) {
  if (!waiting(ex)) return;
  const char *lost = NULL;
  if (ex.acked) {
    if (now >= ex.giveUpAt) lost = "timeout";
  } else if (now >= ex.resendAt) {
    if (ex.transmissions <= MAX_RETRANSMIT) transmit(ex, now);
    else lost = "too_many_retries";
  }
  if (lost != NULL) {
    ex.failure = lost;
    networkError = true;  // the server or the path is gone: a new socket, as after a network change
  }
}

static void takeAnswer(Exchange &ex, const CoapPacket &packet) {
  ex.answered = true;
  ex.code = packet.code;
  ex.observe = (int32_t)optionUint(packet, OPTION_OBSERVE, -1);
  ex.maxAgeS = (uint32_t)optionUint(packet, OPTION_MAX_AGE, DEFAULT_MAX_AGE_S);
  takeEcho(packet, ex.echo);
  ex.bodyLen = packet.payloadlen < sizeof ex.body ? packet.payloadlen : sizeof ex.body;
  if (ex.bodyLen > 0) memcpy(ex.body, packet.payload, ex.bodyLen);
}

static Exchange *exchangeByMid(uint16_t mid) {
  if (waiting(req) && req.mid == mid) return &req;
  if (waiting(reg) && reg.mid == mid) return &reg;
  return NULL;
}

static Exchange *exchangeByToken(const CoapPacket &packet) {
  if (waiting(req) && sameToken(packet, req.token)) return &req;
  if (waiting(reg) && sameToken(packet, reg.token)) return &reg;
  return NULL;
}

static void buildUrl(const char *path, const char *collection, bool withJwt) {
  int n = snprintf(url, sizeof url, "%s?", path);
  if (collection != NULL) n += snprintf(url + n, sizeof url - n, "index=%s&collection=%s&", INDEX_NAME, collection);
  if (withJwt) n += snprintf(url + n, sizeof url - n, "jwt=%s&", jwt);
  snprintf(url + n, sizeof url - n, "%s", KIOT_QUERY_COMPACT);
}

// ------------------------------------------------------------ observation
static void scheduleRegistration() {
  obs.active = false;
  obs.renewal = NULL;
  obs.retryAt = nowMs() + obs.backoffMs;
  Serial.printf("observe retry_in_ms=%u\n", (unsigned)obs.backoffMs);
  obs.backoffMs = nextBackoff(obs.backoffMs);
}

// GET /api/realtime/subscribe?index=&collection=&jwt=&envelope=compact with Observe: 0, on a new token.
static void sendRegistration(const Echo &echo) {
  buildUrl(KIOT_PATH_SUBSCRIBE, COMMANDS, true);
  startExchange(reg, STEP_REGISTER, METHOD_GET, OBSERVE_REGISTER, NULL, url, NULL, 0, echo);
}

// A first registration, or the renewal of the active relation, which goes on until the
// renewal is answered.
static void registerObservation() {
  if (obs.active) Serial.printf("observe renew reason=%s\n", obs.renewal);
  else Serial.printf("observe register index=%s collection=%s\n", INDEX_NAME, COMMANDS);
  obs.renewal = NULL;
  sendRegistration(NO_ECHO);
}

// The same GET with Observe: 1 on the replaced relation's token: the server ends it now. Once
// this exchange is over, answered or not, the token is unknown here: anything still sent on it
// gets an RST, which ends the relation too.
static void deregister(const uint8_t token[4]) {
  buildUrl(KIOT_PATH_SUBSCRIBE, COMMANDS, true);
  startExchange(reg, STEP_DEREGISTER, METHOD_GET, OBSERVE_DEREGISTER, token, url, NULL, 0, NO_ECHO);
}

static void onRegistration(const Exchange &ex) {
  if (ex.failure != NULL) {
    Serial.printf("observe failed reason=%s\n", ex.failure);
    scheduleRegistration();
    return;
  }
  if (!isSuccess(ex.code) || ex.observe < 0) {
    if (isSuccess(ex.code)) Serial.printf("observe failed code=%s reason=no_observe_option\n", codeName(ex.code));
    else sayError("observe failed", ex.code, ex.body, ex.bodyLen);
    if (ex.code == CODE_UNAUTHORIZED && usesLogin()) needLogin = true;
    scheduleRegistration();
    return;
  }
  kcbor_item root, item;
  char channel[96] = "-";
  if (kcbor_init(&root, ex.body, ex.bodyLen) == KCBOR_OK && kcbor_map_get(&root, "channel", &item) == KCBOR_OK) {
    kcbor_copy_text(&item, channel, sizeof channel);
  }
  bool renewed = obs.active;
  uint8_t replaced[4];
  memcpy(replaced, obs.token, 4);
  memcpy(obs.token, ex.token, 4);
  obs.active = true;
  obs.heardAt = nowMs();
  obs.maxAgeS = ex.maxAgeS;
  obs.backoffMs = BACKOFF_FIRST_MS;
  Serial.printf("observe %s seq=%d channel=%s max_age_s=%u\n", renewed ? "renewed" : "registered", (int)ex.observe,
                channel, (unsigned)obs.maxAgeS);
  if (renewed) deregister(replaced);  // last: it reuses `ex`
}

static void onDeregistration(const Exchange &ex) {
  if (ex.failure != NULL) Serial.printf("observe old relation ended reason=%s\n", ex.failure);
  else Serial.printf("observe old relation ended code=%s\n", codeName(ex.code));
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

static void onCommand(int32_t seq, const uint8_t *payload, size_t len) {
  kiot_command command;
  if (kiot_parse_command(payload, len, &command) != KCBOR_OK) {
    Serial.printf("notification seq=%d unreadable_bytes=%u\n", (int)seq, (unsigned)len);
    return;
  }
  if (!command.has_period) {
    Serial.printf("notification seq=%d action=%s id=%s period_ms=none\n", (int)seq, command.action, command.id);
    return;
  }
  Serial.printf("notification seq=%d action=%s id=%s period_ms=%lld\n", (int)seq, command.action, command.id,
                (long long)command.period_ms);
  applyPeriod(command);
}

// A notification, a heartbeat, or the final answer (no Observe, or an error) that ends the relation.
static void onRelationMessage(const CoapPacket &packet) {
  int32_t seq = (int32_t)optionUint(packet, OPTION_OBSERVE, -1);
  if (seq < 0 || !isSuccess(packet.code)) {
    if (isSuccess(packet.code)) Serial.printf("observe ended code=%s reason=no_observe_option\n", codeName(packet.code));
    else sayError("observe ended", packet.code, packet.payload, packet.payloadlen);
    if (packet.code == CODE_UNAUTHORIZED && usesLogin()) needLogin = true;
    scheduleRegistration();
    return;
  }
  obs.heardAt = nowMs();
  obs.maxAgeS = (uint32_t)optionUint(packet, OPTION_MAX_AGE, DEFAULT_MAX_AGE_S);
  if (packet.code == CODE_VALID) {  // the server's heartbeat: the relation is alive, nothing happened
    Serial.printf("observe heartbeat seq=%d max_age_s=%u\n", (int)seq, (unsigned)obs.maxAgeS);
    return;
  }
  onCommand(seq, packet.payload, packet.payloadlen);
}

// ------------------------------------------------------------- callbacks
// An answer goes to its step at once: coap.loop() reads every datagram waiting, and a
// notification right behind a registration's answer must find the relation established.

// ACKs: a piggybacked answer, or an empty ACK announcing a separate one.
static void onAck(CoapPacket &packet, IPAddress ip, int port) {
  (void)ip;
  (void)port;
  Exchange *ex = exchangeByMid(packet.messageid);
  if (ex == NULL) return;  // late: that exchange is over
  if (packet.code == 0) {
    ex->acked = true;
    ex->giveUpAt = nowMs() + SEPARATE_ANSWER_MS;
  } else if (sameToken(packet, ex->token)) {
    takeAnswer(*ex, packet);
    dispatch(*ex);
  }
}

// CON, NON and RST messages (no Uri-Path): RSTs of our requests, separate answers, notifications,
// heartbeats, final answers.
static void onOtherMessage(CoapPacket &packet, IPAddress ip, int port) {
  if (packet.type == TYPE_RST) {  // the server refused a request of ours (an RST is never answered)
    Exchange *ex = exchangeByMid(packet.messageid);
    if (ex == NULL) return;
    ex->failure = "reset";
    dispatch(*ex);
    return;
  }
  bool con = packet.type == TYPE_CON;
  if (con && packet.messageid == lastConMid) {  // a retransmission: handled already, our ACK was lost
    sendEmpty(ip, port, TYPE_ACK, packet.messageid);
    return;
  }
  bool response = (packet.code >> 5) >= 2;
  bool current = response && obs.active && sameToken(packet, obs.token);
  Exchange *ex = response ? exchangeByToken(packet) : NULL;
  if (!current && ex == NULL) {  // a relation dropped, a ping: the RST ends it
    sendEmpty(ip, port, TYPE_RST, packet.messageid);
    return;
  }
  if (con) {
    sendEmpty(ip, port, TYPE_ACK, packet.messageid);
    lastConMid = packet.messageid;
  }
  // The relation being deregistered has the deregistration's token: until its answer (no
  // Observe), its events still count.
  bool oldEvent = ex == &reg && reg.step == STEP_DEREGISTER && isSuccess(packet.code) &&
                  optionUint(packet, OPTION_OBSERVE, -1) >= 0;
  if (current || oldEvent) {
    onRelationMessage(packet);
  } else {
    takeAnswer(*ex, packet);
    dispatch(*ex);
  }
}

// ------------------------------------------------------------------- steps
static void startLogin(const Echo &echo) {
  uint8_t body[160];
  size_t len = kiot_login_body(body, sizeof body, USERNAME, PASSWORD);
  snprintf(url, sizeof url, "%s?%s&%s", KIOT_PATH_LOGIN, KIOT_QUERY_LOCAL, KIOT_QUERY_COMPACT);
  if (echo.len == 0) Serial.printf("login user=%s\n", USERNAME);
  startExchange(req, STEP_LOGIN, METHOD_POST, NO_OBSERVE, NULL, url, body, len, echo);
}

static void onLogin(const Exchange &ex) {
  int64_t expiresAt;
  if (ex.failure != NULL) {
    Serial.printf("login failed reason=%s\n", ex.failure);
  } else if (!isSuccess(ex.code)) {
    sayError("login failed", ex.code, ex.body, ex.bodyLen);
  } else if (kiot_parse_login(ex.body, ex.bodyLen, jwt, sizeof jwt, &expiresAt) != KCBOR_OK) {
    Serial.println("login failed reason=bad_answer");
  } else {
    Serial.printf("login ok user=%s expires_at=%lld jwt_bytes=%u\n", USERNAME, (long long)expiresAt,
                  (unsigned)strlen(jwt));
    jwtExpiresAt = expiresAt;
    needLogin = false;
    loginBackoffMs = BACKOFF_FIRST_MS;
    // Kuzzle then links the subscription to the new token; the old token's expiry would end it.
    if (refreshing) obs.renewal = "token";
    refreshing = false;
    return;
  }
  loginRetryAt = nowMs() + loginBackoffMs;
  loginBackoffMs = nextBackoff(loginBackoffMs);
}

static void startClock(const Echo &echo) {
  buildUrl(KIOT_PATH_NOW, NULL, true);
  startExchange(req, STEP_CLOCK, METHOD_POST, NO_OBSERVE, NULL, url, NULL, 0, echo);
}

static void onClock(const Exchange &ex) {
  uint64_t received = nowMs();
  int64_t now;
  if (ex.failure != NULL) {
    Serial.printf("clock failed reason=%s\n", ex.failure);
  } else if (!isSuccess(ex.code) || kiot_parse_now(ex.body, ex.bodyLen, &now) != KCBOR_OK) {
    sayError("clock failed", ex.code, ex.body, ex.bodyLen);
    if (ex.code == CODE_UNAUTHORIZED && usesLogin()) needLogin = true;
  } else {
    clockOffsetMs = now - (int64_t)(ex.sentAt + received) / 2;
    clockSynced = true;
    Serial.printf("clock now=%lld rtt_ms=%u\n", (long long)now, (unsigned)(received - ex.sentAt));
    return;
  }
  clockRetryAt = received + CLOCK_RETRY_MS;
}

static void startReport(const Echo &echo) {
  uint64_t now = nowMs();
  uint8_t body[64];
  kiot_simulate(&reading, now - startMs, (uint64_t)((int64_t)now + clockOffsetMs), docs);  // or read your sensor here
  readingBytes = kiot_reading_body(body, sizeof body, &reading);
  buildUrl(KIOT_PATH_CREATE, SENSORS, true);
  lastReportMs = now;
  startExchange(req, STEP_REPORT, METHOD_POST, NO_OBSERVE, NULL, url, body, readingBytes, echo);
}

static void onReport(const Exchange &ex) {
  if (ex.failure != NULL) {
    Serial.printf("report failed reason=%s\n", ex.failure);
    return;
  }
  if (!isSuccess(ex.code)) {
    sayError("report failed", ex.code, ex.body, ex.bodyLen);
    if (ex.code == CODE_UNAUTHORIZED && usesLogin()) needLogin = true;
    return;
  }
  char id[64] = "-";
  kiot_parse_created(ex.body, ex.bodyLen, id, sizeof id);
  docs++;
  Serial.printf("report sent n=%u id=%s temperature=%.2f humidity=%u uptime=%llu ts=%llu period_ms=%u bytes=%u\n",
                (unsigned)docs, id, reading.temperature, (unsigned)reading.humidity, (unsigned long long)reading.uptime,
                (unsigned long long)reading.ts, (unsigned)periodMs, (unsigned)readingBytes);
}

// The request of `step` again, with the server's Echo value.
static void repeatWithEcho(Step step, const Echo &echo) {
  Serial.printf("echo repeating %s with the server's Echo value\n", step == STEP_REGISTER ? "registration" : "request");
  switch (step) {
    case STEP_LOGIN: startLogin(echo); break;
    case STEP_CLOCK: startClock(echo); break;
    case STEP_REPORT: startReport(echo); break;
    case STEP_REGISTER: sendRegistration(echo); break;
    default: break;
  }
}

// Hands a finished exchange (answered, refused or lost) to the step that started it; its slot is
// free from then on.
static void dispatch(Exchange &ex) {
  if (ex.step == STEP_NONE || waiting(ex)) return;
  Step step = ex.step;
  ex.step = STEP_NONE;
  // 4.01 + Echo. (Not for a deregistration: the server ends the relation before it answers.)
  if (ex.answered && ex.echo.len > 0 && !ex.echoed && step != STEP_DEREGISTER) {
    Echo echo = ex.echo;  // a copy: the repetition reuses `ex`
    repeatWithEcho(step, echo);
    return;
  }
  switch (step) {
    case STEP_LOGIN: onLogin(ex); break;
    case STEP_CLOCK: onClock(ex); break;
    case STEP_REPORT: onReport(ex); break;
    case STEP_REGISTER: onRegistration(ex); break;
    case STEP_DEREGISTER: onDeregistration(ex); break;
    default: break;
  }
}

static bool tokenExpiresSoon() {
  return clockSynced && jwtExpiresAt > 0 && (int64_t)nowMs() + clockOffsetMs > jwtExpiresAt - REFRESH_BEFORE_MS;
}

// The ordinary requests, one at a time: log in, read the clock, then report every period.
static void startRequests(uint64_t now) {
  if (!needLogin && tokenExpiresSoon()) {
    Serial.println("login refresh reason=token_expires_soon");
    needLogin = refreshing = true;
  }
  if (req.step != STEP_NONE) return;
  if (needLogin) {
    if (now >= loginRetryAt) startLogin(NO_ECHO);
  } else if (!clockSynced) {
    if (now >= clockRetryAt) startClock(NO_ECHO);
  } else if (now >= nextReportMs) {
    startReport(NO_ECHO);
    nextReportMs += periodMs;  // a fixed rate, unless it fell behind
    if (nextReportMs <= now) nextReportMs = now + periodMs;
  }
}

// Registers when there is no relation, renews it when it went silent or the JWT changed.
static void tendObservation(uint64_t now) {
  if (needLogin || !clockSynced || reg.step != STEP_NONE) return;
  // Nothing heard for Max-Age and a margin (the server's retransmissions): the relation may be gone.
  bool silent = now > obs.heardAt + (uint64_t)obs.maxAgeS * 1250 + 2000;
  if (obs.active && obs.renewal == NULL && silent) obs.renewal = "silent";
  if (obs.active ? obs.renewal != NULL : now >= obs.retryAt) registerObservation();
}

// ----------------------------------------------------------------- network
// A new local port: the server sees a new endpoint, as after a real address change.
static void openSocket() {
  uint16_t localPort = 49152 + (esp_random() % 16000);
  udp.stop();
  coap.start(localPort);
  Serial.printf("session open local=%s:%u\n", localIp.toString().c_str(), (unsigned)localPort);
}

// Drops what was in flight (its answers would come to the old socket) and starts over from the
// clock: a new socket, a new registration.
static void newSession(const char *why) {
  localIp = WiFi.localIP();
  Serial.printf("network %s: new session, re-registering (ip=%s)\n", why, localIp.toString().c_str());
  req.step = reg.step = STEP_NONE;
  obs.active = false;
  obs.renewal = NULL;
  obs.retryAt = 0;
  obs.backoffMs = BACKOFF_FIRST_MS;
  clockSynced = false;
  clockRetryAt = 0;
  networkError = false;
  lastConMid = -1;
  openSocket();
}

// True when connected. Wi-Fi back, a new local address or a lost exchange: a new session first.
static bool followNetwork() {
  if (WiFi.status() != WL_CONNECTED) {
    if (wifiUp) Serial.println("network down: waiting for Wi-Fi");
    wifiUp = false;
    return false;
  }
  if (!wifiUp || WiFi.localIP() != localIp) newSession("changed");
  else if (networkError) newSession("error");
  wifiUp = true;
  return true;
}

// ------------------------------------------------------------ setup, loop
void setup() {
  Serial.begin(115200);
  delay(200);
  startMs = nowMs();
  nextMid = (uint16_t)esp_random();
  obs.backoffMs = BACKOFF_FIRST_MS;
  if (!usesLogin()) snprintf(jwt, sizeof jwt, "%s", API_KEY);
  needLogin = usesLogin();
  Serial.printf("start host=%s port=%u index=%s sensors=%s commands=%s period_ms=%u auth=%s\n",
                SERVER_IP.toString().c_str(), (unsigned)SERVER_PORT, INDEX_NAME, SENSORS, COMMANDS, (unsigned)periodMs,
                needLogin ? "login" : "jwt");
  coap.response(onAck);
  coap.server(onOtherMessage, "");
  WiFi.mode(WIFI_STA);
  WiFi.begin(WIFI_SSID, WIFI_PASSWORD);
}

void loop() {
  delay(1);  // lets the Wi-Fi and idle tasks run; nothing else here waits
  if (!followNetwork()) return;
  coap.loop();  // what arrived: answers go to their steps, notifications and heartbeats are handled
  uint64_t now = nowMs();
  poll(req, now);
  poll(reg, now);
  dispatch(req);  // the exchanges that got no answer
  dispatch(reg);
  if (networkError) return;  // a new session first, next turn
  startRequests(now);
  tendObservation(now);
}
