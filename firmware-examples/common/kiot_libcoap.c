/* kiot_libcoap: see kiot_libcoap.h. */
#include "kiot_libcoap.h"

#include <coap3/coap.h>
#include <inttypes.h>
#include <netdb.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define BODY_MAX 2048 /* largest answer kept (the plugin's answers here are < 400 bytes) */
#define JWT_MAX 512
#define BACKOFF_FIRST_MS 500
#define BACKOFF_MAX_MS 60000
#define REQUEST_TIMEOUT_MS 120000 /* libcoap gives up on a CON after ~93 s (RFC 7252 defaults) */
#define REFRESH_BEFORE_MS 60000   /* log in again this long before the token expires */
#define DEFAULT_MAX_AGE_S 60      /* RFC 7252 §5.10.5: Max-Age when the option is absent */

typedef enum { OBS_IDLE, OBS_REGISTERING, OBS_ACTIVE, OBS_CANCELLING } obs_state;

static volatile sig_atomic_t network_changed_flag;
static volatile sig_atomic_t stop_flag;

/* One device per process: the state is static (nothing on a small task stack). */
static struct {
  const kiot_device_config *cfg;
  coap_context_t *ctx;
  coap_session_t *session;
  coap_address_t server;
  char jwt[JWT_MAX];
  int64_t jwt_expires_at; /* server clock, ms; -1: never */
  int need_login;
  int clock_synced;
  int64_t clock_offset_ms; /* server time = monotonic + offset */
  uint32_t period_ms;
  uint64_t start_ms;
  uint64_t next_report_ms;
  uint64_t last_report_ms;
  uint32_t docs;
  int network_error;
  uint32_t login_backoff_ms;
  int refreshing; /* the login under way replaces a token about to expire */

  /* The one request in flight that the loop waits for. */
  struct {
    int active, done;
    uint8_t token[8];
    size_t token_len;
    coap_pdu_code_t code;
    int nack; /* -1, or the coap_nack_reason_t that ended it */
    uint8_t body[BODY_MAX];
    size_t len;
    int truncated;
  } req;

  /* The observation of the commands collection. */
  struct {
    obs_state state;
    uint8_t token[8];
    size_t token_len;
    uint64_t retry_at;
    uint32_t backoff_ms;
    uint32_t notifications;
    /* Liveness: when the relation was last heard from, and the Max-Age it then announced. */
    uint64_t heard_at;
    uint32_t max_age_s;
    /* The relation a renewal replaces: kept (its events still count) until the new one is
     * answered, then deregistered. libcoap puts a token of its own on the wire for every request,
     * so a renewal cannot reuse the relation's token: it is a new relation. */
    uint8_t old_token[8];
    size_t old_token_len;
  } obs;
} dev;

void kiot_device_network_changed(void) { network_changed_flag = 1; }

void kiot_device_stop(void) { stop_flag = 1; }

/* ---------------------------------------------------------------- helpers */

static void say(const char *format, ...) {
  va_list ap;
  va_start(ap, format);
  vprintf(format, ap);
  va_end(ap);
  putchar('\n');
  fflush(stdout);
}

static uint64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int64_t server_now_ms(void) { return (int64_t)mono_ms() + dev.clock_offset_ms; }

static int should_stop(void) {
  return stop_flag || (dev.cfg->max_time_ms > 0 && mono_ms() - dev.start_ms >= dev.cfg->max_time_ms);
}

/* "4.01" */
static const char *code_name(coap_pdu_code_t code) {
  static char text[8];
  snprintf(text, sizeof text, "%d.%02d", (int)COAP_RESPONSE_CLASS(code), (int)(code & 0x1f));
  return text;
}

static int is_success(coap_pdu_code_t code) { return COAP_RESPONSE_CLASS(code) == 2; }

static int is_unauthorized(coap_pdu_code_t code) { return code == COAP_RESPONSE_CODE(401); }

static const char *nack_name(int reason) {
  switch (reason) {
    case COAP_NACK_TOO_MANY_RETRIES: return "too_many_retries";
    case COAP_NACK_NOT_DELIVERABLE: return "not_deliverable";
    case COAP_NACK_RST: return "reset";
    case COAP_NACK_TLS_FAILED: return "tls_failed";
    case COAP_NACK_ICMP_ISSUE: return "icmp_issue";
    default: return "other";
  }
}

static int same_token(coap_bin_const_t token, const uint8_t *bytes, size_t len) {
  return token.length == len && (len == 0 || memcmp(token.s, bytes, len) == 0);
}

/* Keeps libcoap running (retransmissions, notifications) for up to `ms`. */
static void idle(uint64_t ms) {
  uint64_t until = mono_ms() + ms;
  while (!should_stop() && !network_changed_flag) {
    uint64_t now = mono_ms();
    if (now >= until) break;
    uint64_t wait = until - now;
    coap_io_process(dev.ctx, (uint32_t)(wait > 100 ? 100 : wait < 1 ? 1 : wait));
  }
}

static uint32_t next_backoff(uint32_t backoff) { return backoff >= BACKOFF_MAX_MS / 2 ? BACKOFF_MAX_MS : backoff * 2; }

/* --------------------------------------------------------------- sessions */

static int resolve(const char *host, uint16_t port, coap_address_t *out) {
  struct addrinfo hints, *found = NULL;
  char service[8];
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_DGRAM;
  snprintf(service, sizeof service, "%u", (unsigned)port);
  int rc = getaddrinfo(host, service, &hints, &found);
  if (rc != 0 || found == NULL) {
    say("error resolve host=%s code=%d", host, rc);
    return -1;
  }
  coap_address_init(out);
  out->size = (socklen_t)found->ai_addrlen;
  memcpy(&out->addr.sa, found->ai_addr, found->ai_addrlen);
  freeaddrinfo(found);
  return 0;
}

static coap_session_t *new_session(void) {
  if (dev.cfg->psk_identity == NULL || dev.cfg->psk_identity[0] == '\0') {
    return coap_new_client_session(dev.ctx, NULL, &dev.server, COAP_PROTO_UDP);
  }
  if (!coap_dtls_is_supported()) {
    say("error session reason=no_dtls_in_this_libcoap");
    return NULL;
  }
  static coap_dtls_cpsk_t psk;
  memset(&psk, 0, sizeof psk);
  psk.version = COAP_DTLS_CPSK_SETUP_VERSION;
  psk.client_sni = (char *)dev.cfg->host;
  psk.psk_info.identity.s = (const uint8_t *)dev.cfg->psk_identity;
  psk.psk_info.identity.length = strlen(dev.cfg->psk_identity);
  psk.psk_info.key.s = (const uint8_t *)dev.cfg->psk_key;
  psk.psk_info.key.length = dev.cfg->psk_key ? strlen(dev.cfg->psk_key) : 0;
  return coap_new_client_session_psk2(dev.ctx, NULL, &dev.server, COAP_PROTO_DTLS, &psk);
}

static int open_session(void) {
  dev.session = new_session();
  if (dev.session == NULL) {
    say("error session reason=cannot_create");
    return -1;
  }
  char local[64] = {0}, remote[64] = {0};
  coap_print_addr(coap_session_get_addr_local(dev.session), (unsigned char *)local, sizeof local - 1);
  coap_print_addr(coap_session_get_addr_remote(dev.session), (unsigned char *)remote, sizeof remote - 1);
  say("session open local=%s remote=%s", local, remote);
  return 0;
}

static void close_session(void) {
  if (dev.session != NULL) coap_session_release(dev.session);
  dev.session = NULL;
  dev.req.active = 0;
  dev.obs.state = OBS_IDLE;
}

/* A new socket and session (new source port: a new endpoint for the server), then re-register. */
static void reopen_session(const char *why) {
  say("network %s: new session, re-registering", why);
  close_session();
  dev.obs.retry_at = 0;
  dev.obs.backoff_ms = BACKOFF_FIRST_MS;
  dev.clock_synced = 0;
  open_session();
}

/* --------------------------------------------------------------- requests */

static void add_path(coap_optlist_t **options, const char *path) {
  while (*path != '\0') {
    const char *slash = strchr(path, '/');
    size_t len = slash ? (size_t)(slash - path) : strlen(path);
    coap_insert_optlist(options, coap_new_optlist(COAP_OPTION_URI_PATH, len, (const uint8_t *)path));
    path += len + (slash ? 1 : 0);
  }
}

/* A CON request with token/token_len, or a new token written there when *token_len is 0. NULL if it
 * cannot be built. */
static coap_pdu_t *build_request(coap_pdu_code_t method, const char *path, const char *const *queries, size_t query_count,
                                 int observe, const uint8_t *body, size_t body_len, uint8_t *token, size_t *token_len) {
  coap_pdu_t *pdu = coap_new_pdu(COAP_MESSAGE_CON, method, dev.session);
  if (pdu == NULL) return NULL;
  if (*token_len == 0) coap_session_new_token(dev.session, token_len, token);
  coap_optlist_t *options = NULL;
  uint8_t value[4];
  if (observe >= 0) {
    size_t n = coap_encode_var_safe(value, sizeof value, (unsigned)observe);
    coap_insert_optlist(&options, coap_new_optlist(COAP_OPTION_OBSERVE, n, value));
  }
  add_path(&options, path);
  if (body != NULL) {
    uint8_t format[2];
    size_t n = coap_encode_var_safe(format, sizeof format, KIOT_CONTENT_FORMAT_CBOR);
    coap_insert_optlist(&options, coap_new_optlist(COAP_OPTION_CONTENT_FORMAT, n, format));
  }
  for (size_t i = 0; i < query_count; i++) {
    if (queries[i][0] == '\0') continue; /* no jwt on coaps: the DTLS identity is the Kuzzle identity */
    coap_insert_optlist(&options, coap_new_optlist(COAP_OPTION_URI_QUERY, strlen(queries[i]), (const uint8_t *)queries[i]));
  }
  int ok = coap_add_token(pdu, *token_len, token) && coap_add_optlist_pdu(pdu, &options) &&
           (body == NULL || coap_add_data(pdu, body_len, body));
  coap_delete_optlist(options);
  if (!ok) {
    coap_delete_pdu(pdu);
    return NULL;
  }
  return pdu;
}

/* Sends a request and runs libcoap until its answer (or failure). 0 if an answer came. */
static int request(coap_pdu_code_t method, const char *path, const char *const *queries, size_t query_count,
                   const uint8_t *body, size_t body_len) {
  dev.req.done = 0;
  dev.req.nack = -1;
  dev.req.len = 0;
  dev.req.truncated = 0;
  if (dev.session == NULL) return -1;
  dev.req.token_len = 0;
  coap_pdu_t *pdu = build_request(method, path, queries, query_count, -1, body, body_len, dev.req.token, &dev.req.token_len);
  if (pdu == NULL) {
    say("error request path=%s reason=cannot_build", path);
    return -1;
  }
  dev.req.active = 1;
  if (coap_send(dev.session, pdu) == COAP_INVALID_MID) {
    dev.req.active = 0;
    say("error request path=%s reason=cannot_send", path);
    dev.network_error = 1;
    return -1;
  }
  uint64_t deadline = mono_ms() + REQUEST_TIMEOUT_MS;
  while (!dev.req.done && !should_stop() && mono_ms() < deadline) coap_io_process(dev.ctx, 100);
  dev.req.active = 0;
  if (!dev.req.done && !should_stop()) dev.network_error = 1; /* no answer, no NACK: treat as lost */
  if (dev.req.done && dev.req.truncated) say("error answer path=%s reason=truncated kept_bytes=%zu", path, dev.req.len);
  return dev.req.done && dev.req.nack < 0 ? 0 : -1;
}

/* Why the last request got no answer, for the log. */
static const char *request_failure(void) {
  if (dev.req.nack >= 0) return nack_name(dev.req.nack);
  return should_stop() ? "stopped" : "timeout";
}

/* Prints "<what> code=4.01 id=... message="..."" for an error answer. */
static void say_error(const char *what, coap_pdu_code_t code, const uint8_t *body, size_t len) {
  char id[64], message[160];
  kiot_parse_error(body, len, id, sizeof id, message, sizeof message);
  say("%s code=%s id=%s message=\"%s\"", what, code_name(code), id[0] ? id : "-", message);
}

/* "jwt=<token>" and friends, rebuilt for every request. */
static char q_index[80], q_sensors[80], q_commands[80], q_jwt[JWT_MAX + 8], q_expires[48];

static void build_queries(void) {
  snprintf(q_index, sizeof q_index, "index=%s", dev.cfg->index);
  snprintf(q_sensors, sizeof q_sensors, "collection=%s", dev.cfg->sensors);
  snprintf(q_commands, sizeof q_commands, "collection=%s", dev.cfg->commands);
  if (dev.jwt[0] == '\0') q_jwt[0] = '\0';
  else snprintf(q_jwt, sizeof q_jwt, "jwt=%s", dev.jwt);
}

/* ----------------------------------------------------------------- steps */

static int login(void) {
  uint8_t body[256];
  size_t len = kiot_login_body(body, sizeof body, dev.cfg->username, dev.cfg->password);
  const char *queries[] = {KIOT_QUERY_LOCAL, KIOT_QUERY_COMPACT, q_expires};
  size_t query_count = q_expires[0] != '\0' ? 3 : 2;
  if (len == 0) {
    say("login failed reason=credentials_too_long");
    return -1;
  }
  say("login user=%s", dev.cfg->username);
  if (request(COAP_REQUEST_CODE_POST, KIOT_PATH_LOGIN, queries, query_count, body, len) < 0) {
    say("login failed reason=%s", request_failure());
    return -1;
  }
  if (!is_success(dev.req.code)) {
    say_error("login failed", dev.req.code, dev.req.body, dev.req.len);
    return -1;
  }
  kcbor_status status = kiot_parse_login(dev.req.body, dev.req.len, dev.jwt, sizeof dev.jwt, &dev.jwt_expires_at);
  if (status != KCBOR_OK) {
    say("login failed reason=bad_answer cbor=\"%s\"", kcbor_status_name(status));
    return -1;
  }
  build_queries();
  say("login ok user=%s expires_at=%" PRId64 " jwt_bytes=%zu", dev.cfg->username, dev.jwt_expires_at, strlen(dev.jwt));
  return 0;
}

static int sync_clock(void) {
  const char *queries[] = {q_jwt, KIOT_QUERY_COMPACT};
  uint64_t sent = mono_ms();
  if (request(COAP_REQUEST_CODE_POST, KIOT_PATH_NOW, queries, 2, NULL, 0) < 0) {
    say("clock failed reason=%s", request_failure());
    return -1;
  }
  uint64_t received = mono_ms();
  int64_t now;
  if (!is_success(dev.req.code)) {
    say_error("clock failed", dev.req.code, dev.req.body, dev.req.len);
    if (is_unauthorized(dev.req.code)) dev.need_login = 1;
    return -1;
  }
  if (kiot_parse_now(dev.req.body, dev.req.len, &now) != KCBOR_OK) {
    say("clock failed reason=bad_answer");
    return -1;
  }
  dev.clock_offset_ms = now - (int64_t)(sent + received) / 2;
  dev.clock_synced = 1;
  say("clock now=%" PRId64 " rtt_ms=%" PRIu64, now, received - sent);
  return 0;
}

static void schedule_registration(void) {
  dev.obs.state = OBS_IDLE;
  dev.obs.retry_at = mono_ms() + dev.obs.backoff_ms;
  say("observe retry_in_ms=%" PRIu32, dev.obs.backoff_ms);
  dev.obs.backoff_ms = next_backoff(dev.obs.backoff_ms);
}

/* GET /api/realtime/subscribe?index=&collection=&jwt=&envelope=compact with Observe: 0. Its
 * answer comes to on_response like the notifications: the loop does not wait for it. With
 * `renew_reason`, an active relation is registered again (after a silence, or with a new JWT):
 * the old one stays until the new one is answered, then is deregistered (the server keeps the
 * Kuzzle subscription, which the new relation uses). */
static void register_observation(const char *renew_reason) {
  const char *queries[] = {q_index, q_commands, q_jwt, KIOT_QUERY_COMPACT};
  int renew = renew_reason != NULL && dev.obs.state == OBS_ACTIVE && dev.obs.old_token_len == 0;
  if (renew_reason != NULL && !renew) return; /* a renewal is already on its way */
  if (renew) {
    memcpy(dev.obs.old_token, dev.obs.token, dev.obs.token_len);
    dev.obs.old_token_len = dev.obs.token_len;
  }
  dev.obs.token_len = 0;
  coap_pdu_t *pdu = build_request(COAP_REQUEST_CODE_GET, KIOT_PATH_SUBSCRIBE, queries, 4, COAP_OBSERVE_ESTABLISH, NULL, 0,
                                  dev.obs.token, &dev.obs.token_len);
  if (pdu == NULL) {
    say("error observe reason=cannot_build");
    schedule_registration();
    return;
  }
  dev.obs.heard_at = mono_ms(); /* one renewal per silence */
  if (renew) {
    say("observe renew reason=%s", renew_reason);
  } else {
    dev.obs.state = OBS_REGISTERING;
    say("observe register index=%s collection=%s", dev.cfg->index, dev.cfg->commands);
  }
  if (coap_send(dev.session, pdu) == COAP_INVALID_MID) {
    say("error observe reason=cannot_send");
    schedule_registration();
  }
}

static void apply_period(const kiot_command *command) {
  uint32_t period = (uint32_t)command->period_ms;
  if (period == dev.period_ms) {
    say("period unchanged ms=%" PRIu32 " command=%s", period, command->id);
    return;
  }
  say("period changed old_ms=%" PRIu32 " new_ms=%" PRIu32 " command=%s", dev.period_ms, period, command->id);
  dev.period_ms = period;
  uint64_t now = mono_ms();
  dev.next_report_ms = dev.last_report_ms + period > now ? dev.last_report_ms + period : now;
}

/* Deregisters the relation a renewal replaced (if the server still has it; a lost one answers all the same). */
static void end_old_relation(void) {
  if (dev.obs.old_token_len == 0) return;
  coap_binary_t token = {dev.obs.old_token_len, dev.obs.old_token};
  if (dev.session == NULL || !coap_cancel_observe(dev.session, &token, COAP_MESSAGE_CON)) dev.obs.old_token_len = 0;
}

static void on_observe(const coap_pdu_t *received, coap_pdu_code_t code, const uint8_t *data, size_t len) {
  coap_opt_iterator_t it;
  coap_opt_t *option = coap_check_option(received, COAP_OPTION_OBSERVE, &it);
  unsigned sequence = option ? coap_decode_var_bytes(coap_opt_value(option), coap_opt_length(option)) : 0;

  if (dev.obs.state == OBS_CANCELLING) {
    say("observe cancelled code=%s", code_name(code));
    dev.obs.state = OBS_IDLE;
    return;
  }
  if (is_success(code) && option != NULL) {
    coap_opt_iterator_t max_age_it;
    coap_opt_t *max_age = coap_check_option(received, COAP_OPTION_MAXAGE, &max_age_it);
    dev.obs.heard_at = mono_ms();
    dev.obs.max_age_s = max_age ? coap_decode_var_bytes(coap_opt_value(max_age), coap_opt_length(max_age)) : DEFAULT_MAX_AGE_S;
    if (code == COAP_RESPONSE_CODE(203)) { /* the server's heartbeat: the relation is alive, nothing happened */
      say("observe heartbeat seq=%u max_age_s=%" PRIu32, sequence, dev.obs.max_age_s);
      return;
    }
    /* The (re-)registration's answer names the channel; a notification does not. */
    kcbor_item root, channel;
    char name[96];
    if (kcbor_init(&root, data, len) == KCBOR_OK && kcbor_map_get(&root, "channel", &channel) == KCBOR_OK &&
        kcbor_copy_text(&channel, name, sizeof name) == KCBOR_OK) {
      say("observe %s seq=%u channel=%s max_age_s=%" PRIu32, dev.obs.old_token_len > 0 ? "renewed" : "registered", sequence,
          name, dev.obs.max_age_s);
      dev.obs.state = OBS_ACTIVE;
      dev.obs.backoff_ms = BACKOFF_FIRST_MS;
      end_old_relation();
      return;
    }
    kiot_command command;
    dev.obs.notifications++;
    if (kiot_parse_command(data, len, &command) != KCBOR_OK) {
      say("notification seq=%u unreadable_bytes=%zu", sequence, len);
      return;
    }
    if (command.has_period) {
      say("notification seq=%u action=%s id=%s period_ms=%" PRId64, sequence, command.action, command.id, command.period_ms);
      apply_period(&command);
    } else {
      say("notification seq=%u action=%s id=%s period_ms=none", sequence, command.action, command.id);
    }
    return;
  }
  /* Refused registration, or the end of the relation: a final answer without Observe. */
  if (is_success(code)) {
    say("observe %s code=%s reason=no_observe_option", dev.obs.state == OBS_REGISTERING ? "failed" : "ended", code_name(code));
  } else {
    say_error(dev.obs.state == OBS_REGISTERING ? "observe failed" : "observe ended", code, data, len);
  }
  if (is_unauthorized(code) && dev.cfg->username != NULL) dev.need_login = 1;
  schedule_registration();
}

static coap_response_t on_response(coap_session_t *session, const coap_pdu_t *sent, const coap_pdu_t *received,
                                   const coap_mid_t mid) {
  (void)sent;
  (void)mid;
  if (session != dev.session) return COAP_RESPONSE_FAIL; /* a session we dropped */
  coap_bin_const_t token = coap_pdu_get_token(received);
  coap_pdu_code_t code = coap_pdu_get_code(received);
  const uint8_t *data = NULL;
  size_t len = 0, offset = 0, total = 0;
  if (!coap_get_data_large(received, &len, &data, &offset, &total)) len = 0;

  if (dev.obs.old_token_len > 0 && same_token(token, dev.obs.old_token, dev.obs.old_token_len)) {
    if (coap_check_option(received, COAP_OPTION_OBSERVE, &(coap_opt_iterator_t){0}) != NULL && dev.obs.state == OBS_ACTIVE) {
      on_observe(received, code, data, len); /* an event on the old relation while the renewal is on its way */
    } else {
      say("observe old relation ended code=%s", code_name(code)); /* its deregistration's answer */
      dev.obs.old_token_len = 0;
    }
    return COAP_RESPONSE_OK;
  }
  if (dev.obs.state != OBS_IDLE && same_token(token, dev.obs.token, dev.obs.token_len)) {
    on_observe(received, code, data, len);
    return COAP_RESPONSE_OK;
  }
  if (dev.req.active && !dev.req.done && same_token(token, dev.req.token, dev.req.token_len)) {
    dev.req.code = code;
    dev.req.truncated = offset != 0 || len != total || len > sizeof dev.req.body;
    dev.req.len = len > sizeof dev.req.body ? sizeof dev.req.body : len;
    if (dev.req.len > 0) memcpy(dev.req.body, data, dev.req.len);
    dev.req.done = 1;
    return COAP_RESPONSE_OK;
  }
  /* Unknown token: a notification of a relation we no longer want. libcoap answers RST,
   * which ends it on the server. */
  return COAP_RESPONSE_FAIL;
}

static void on_nack(coap_session_t *session, const coap_pdu_t *sent, const coap_nack_reason_t reason, const coap_mid_t mid) {
  (void)mid;
  if (session != dev.session) return;
  coap_bin_const_t token = {0, NULL};
  if (sent != NULL) token = coap_pdu_get_token(sent);
  /* A failed DTLS handshake (a revoked credential, a server that lost the session) also calls for a
   * new session: a new socket and handshake, after the loop's backoff. */
  int network = reason == COAP_NACK_TOO_MANY_RETRIES || reason == COAP_NACK_NOT_DELIVERABLE || reason == COAP_NACK_ICMP_ISSUE ||
                reason == COAP_NACK_TLS_FAILED;
  int is_obs = dev.obs.state != OBS_IDLE && same_token(token, dev.obs.token, dev.obs.token_len);
  int is_req = dev.req.active && !dev.req.done && same_token(token, dev.req.token, dev.req.token_len);
  /* Without a token match (a block-wise exchange may use its own), the waited-for request is the likely one. */
  if (!is_obs && !is_req) is_req = dev.req.active && !dev.req.done;
  say("nack reason=%s request=%s", nack_name(reason), is_obs ? "observe" : is_req ? "request" : "other");
  if (is_req) {
    dev.req.nack = reason;
    dev.req.done = 1;
  } else if (is_obs && dev.obs.state != OBS_CANCELLING) {
    schedule_registration();
  }
  if (network) dev.network_error = 1;
}

static void report(void) {
  kiot_reading reading;
  uint64_t uptime_ms = mono_ms() - dev.start_ms;
  kiot_simulate(&reading, uptime_ms, 0, dev.docs);
  if (dev.cfg->read_sensor != NULL) dev.cfg->read_sensor(&reading, uptime_ms, dev.docs);
  reading.uptime = uptime_ms / 1000;
  reading.ts = (uint64_t)server_now_ms();
  uint8_t body[64];
  size_t len = kiot_reading_body(body, sizeof body, &reading);
  const char *queries[] = {q_index, q_sensors, q_jwt, KIOT_QUERY_COMPACT};
  dev.last_report_ms = mono_ms();
  if (request(COAP_REQUEST_CODE_POST, KIOT_PATH_CREATE, queries, 4, body, len) < 0) {
    say("report failed reason=%s", request_failure());
    return;
  }
  if (!is_success(dev.req.code)) {
    say_error("report failed", dev.req.code, dev.req.body, dev.req.len);
    if (is_unauthorized(dev.req.code) && dev.cfg->username != NULL) dev.need_login = 1;
    return;
  }
  char id[64] = "-";
  kiot_parse_created(dev.req.body, dev.req.len, id, sizeof id);
  dev.docs++;
  say("report sent n=%" PRIu32 " id=%s temperature=%.2f humidity=%" PRIu32 " uptime=%" PRIu64 " ts=%" PRIu64
      " period_ms=%" PRIu32 " bytes=%zu",
      dev.docs, id, reading.temperature, reading.humidity, reading.uptime, reading.ts, dev.period_ms, len);
}

/* Deregisters (GET with Observe: 1) so that the server drops the subscription now. */
static void cancel_observation(void) {
  if (dev.obs.state != OBS_ACTIVE || dev.session == NULL) return;
  coap_binary_t token = {dev.obs.token_len, dev.obs.token};
  dev.obs.state = OBS_CANCELLING;
  if (!coap_cancel_observe(dev.session, &token, COAP_MESSAGE_CON)) {
    dev.obs.state = OBS_IDLE;
    return;
  }
  uint64_t until = mono_ms() + 1500;
  while (dev.obs.state == OBS_CANCELLING && mono_ms() < until) coap_io_process(dev.ctx, 50);
}

/* ------------------------------------------------------------------- loop */

int kiot_device_run(const kiot_device_config *cfg) {
  memset(&dev, 0, sizeof dev);
  dev.cfg = cfg;
  dev.period_ms = cfg->period_ms;
  dev.start_ms = mono_ms();
  dev.obs.backoff_ms = BACKOFF_FIRST_MS;
  dev.login_backoff_ms = BACKOFF_FIRST_MS;
  dev.jwt_expires_at = -1;
  stop_flag = 0;
  network_changed_flag = 0;

  int use_dtls = cfg->psk_identity != NULL && cfg->psk_identity[0] != '\0';
  int has_jwt = cfg->jwt != NULL && cfg->jwt[0] != '\0';
  /* On coaps with neither a jwt nor a username, the plugin maps the PSK identity to a Kuzzle API key. */
  int use_identity = use_dtls && !has_jwt && cfg->username == NULL;
  int use_login = !has_jwt && !use_identity;
  if (use_login && (cfg->username == NULL || cfg->password == NULL)) {
    say("error config reason=no_credentials (a username and password, a jwt, or a PSK identity)");
    return 1;
  }
  if (has_jwt) {
    if (strlen(cfg->jwt) >= sizeof dev.jwt) {
      say("error config reason=jwt_too_long");
      return 1;
    }
    strcpy(dev.jwt, cfg->jwt);
  }
  q_expires[0] = '\0';
  if (cfg->token_lifetime != NULL && cfg->token_lifetime[0] != '\0' &&
      snprintf(q_expires, sizeof q_expires, "expiresIn=%s", cfg->token_lifetime) >= (int)sizeof q_expires) {
    say("error config reason=token_lifetime_too_long");
    return 1;
  }
  dev.need_login = use_login;
  build_queries();

  coap_startup();
  coap_set_log_level((coap_log_t)cfg->coap_log_level);
  if (resolve(cfg->host, cfg->port, &dev.server) < 0) {
    coap_cleanup();
    return 1;
  }
  dev.ctx = coap_new_context(NULL);
  if (dev.ctx == NULL) {
    say("error context reason=cannot_create");
    coap_cleanup();
    return 1;
  }
  coap_context_set_block_mode(dev.ctx, COAP_BLOCK_USE_LIBCOAP | COAP_BLOCK_SINGLE_BODY);
  coap_register_response_handler(dev.ctx, on_response);
  coap_register_nack_handler(dev.ctx, on_nack);

  say("start host=%s port=%u index=%s sensors=%s commands=%s period_ms=%" PRIu32 " auth=%s transport=%s libcoap=%s",
      cfg->host, (unsigned)cfg->port, cfg->index, cfg->sensors, cfg->commands, cfg->period_ms,
      use_login ? "login" : use_identity ? "dtls_identity" : "jwt", use_dtls ? "dtls-psk" : "udp", coap_package_version());
  open_session();

  const char *reason = "stopped";
  int status = 0;
  while (!should_stop()) {
    if (network_changed_flag) {
      network_changed_flag = 0;
      reopen_session("changed");
    } else if (dev.network_error) {
      dev.network_error = 0;
      reopen_session("error");
      idle(dev.obs.backoff_ms);
    }
    if (dev.session == NULL) {
      idle(1000);
      if (dev.session == NULL) open_session();
      continue;
    }
    if (dev.need_login) {
      if (!use_login) {
        say("error auth reason=token_rejected (%s: nothing to log in with)", use_identity ? "the PSK identity's API key" : "a jwt was given");
        reason = "token_rejected";
        status = 1;
        break;
      }
      if (login() < 0) {
        idle(dev.login_backoff_ms);
        dev.login_backoff_ms = next_backoff(dev.login_backoff_ms);
        continue;
      }
      dev.need_login = 0;
      dev.login_backoff_ms = BACKOFF_FIRST_MS;
      /* The relation goes on under the new token: Kuzzle links it instead of the old one, whose expiry would end it. */
      if (dev.refreshing && dev.obs.state == OBS_ACTIVE) register_observation("token");
      dev.refreshing = 0;
    }
    if (!dev.clock_synced) {
      if (sync_clock() < 0) idle(1000);
      continue;
    }
    uint64_t now = mono_ms();
    if (use_login && dev.jwt_expires_at > 0 && server_now_ms() > dev.jwt_expires_at - REFRESH_BEFORE_MS) {
      say("login refresh reason=token_expires_soon");
      dev.need_login = 1;
      dev.refreshing = 1;
      continue;
    }
    if (dev.obs.state == OBS_IDLE && now >= dev.obs.retry_at) register_observation(NULL);
    /* Nothing heard for Max-Age and a margin (the server's retransmissions): the relation may be gone. */
    if (dev.obs.state == OBS_ACTIVE && now - dev.obs.heard_at > (uint64_t)dev.obs.max_age_s * 1250 + 2000) {
      register_observation("silent");
    }
    if (now >= dev.next_report_ms) {
      report();
      /* A fixed rate: the next report is due one period after this one was due. */
      dev.next_report_ms += dev.period_ms;
      if (dev.next_report_ms <= mono_ms()) dev.next_report_ms = mono_ms() + dev.period_ms; /* fell behind */
      if (cfg->max_docs > 0 && dev.docs >= cfg->max_docs) {
        reason = "max_docs";
        break;
      }
      continue;
    }
    uint64_t wait = dev.next_report_ms - now;
    if (dev.obs.state == OBS_IDLE && dev.obs.retry_at > now && dev.obs.retry_at - now < wait) wait = dev.obs.retry_at - now;
    coap_io_process(dev.ctx, (uint32_t)(wait > 100 ? 100 : wait < 1 ? 1 : wait));
  }
  if (strcmp(reason, "stopped") == 0 && !stop_flag) reason = "max_time";

  cancel_observation();
  say("exit reason=%s docs=%" PRIu32 " notifications=%" PRIu32, reason, dev.docs, dev.obs.notifications);
  close_session();
  coap_free_context(dev.ctx);
  coap_cleanup();
  return status;
}
