/*
 * Kuzzle CoAP sensor on Zephyr: coap_client (requests, Observe) and zcbor (CBOR).
 *
 * The same job and the same CoAP requests as the other examples (firmware-examples/README.md):
 * log in (or use an API key), read the server clock, observe the `commands` collection,
 * create a `sensors` document every period, apply the period a command sets. Every step is
 * printed as one line "<event> key=value ...", as the POSIX example prints them.
 *
 * The loop never blocks for long: it waits at most 100 ms for a signal from coap_client's
 * thread, then handles a finished answer, follows the observation and starts the next step
 * (login, clock, report) when its time has come. One step's request is in flight at a time;
 * backoffs are times, not sleeps. coap_client retransmits CON requests itself (prj.conf).
 *
 * Liveness, as in common/kiot_libcoap.c: the plugin puts Max-Age on the registration's answer
 * and on every notification, and sends a quiet relation a 2.03 heartbeat. The relation is
 * registered again when nothing was heard on it for 1.25 x Max-Age + 2 s ("silent"), after a
 * new login a minute before the token expires ("token"), when it ends, and on a new socket
 * (network change). A renewal is a second request: the old one is cancelled locally once the
 * new one is answered; coap_client answers the old token's next message with RST, and the
 * server ends that relation at the latest when its next heartbeat goes unacknowledged.
 *
 * Written for Zephyr 4.3's coap_client API (struct coap_client_response_data, path and options
 * as arrays in struct coap_client_request). The path is at most 128 characters there, so the
 * JWT travels as a Uri-Query option of its own (CONFIG_COAP_EXTENDED_OPTIONS_LEN).
 *
 * coaps (CONFIG_KUZZLE_DTLS, overlay-dtls.conf): the PSK and its identity are registered once
 * with tls_credential_add(); each session is a new IPPROTO_DTLS_1_2 socket, connected (which
 * runs the handshake), that coap_client uses without an address. With neither a username nor a
 * JWT configured, the PSK identity is the device's Kuzzle identity: no login, no jwt option.
 * A request that fails at the network level (a timeout, a socket error: a close_notify from the
 * server, a lost session) or a silent observation means the DTLS session may be gone: the loop
 * closes the socket and shakes hands again on a new one, then registers again.
 *
 * Not verified: it was not built for Zephyr nor run against Kuzzle here, only syntax-checked
 * against stand-in headers and run on a host against a fake coap_client (README.md).
 */
#include <errno.h>
#include <stdarg.h>
#include <string.h>
#include <zcbor_decode.h>
#include <zcbor_encode.h>
#include <zephyr/kernel.h>
#include <zephyr/net/coap.h>
#include <zephyr/net/coap_client.h>
#include <zephyr/net/conn_mgr_monitor.h>
#include <zephyr/net/net_mgmt.h>
#include <zephyr/net/socket.h>
#include <zephyr/sys/printk.h>
#if defined(CONFIG_KUZZLE_DTLS)
#include <zephyr/net/tls_credentials.h>
#endif

#if !defined(CONFIG_COAP_EXTENDED_OPTIONS_LEN)
#error "CONFIG_COAP_EXTENDED_OPTIONS_LEN=y is needed: the JWT is one long Uri-Query option"
#endif

#define QUERY_COMPACT "envelope=compact"
#define PERIOD_MIN_MS 100
#define PERIOD_MAX_MS 86400000
#define ANSWER_MAX 1024
#define JWT_CAP (CONFIG_COAP_EXTENDED_OPTIONS_LEN_VALUE - 4) /* "jwt=" + token in one option */
#define LOOP_WAIT_MAX_MS 100
#define BACKOFF_FIRST_MS 500
#define BACKOFF_MAX_MS 60000
#define CLOCK_RETRY_MS 1000
#define SESSION_RETRY_MS 5000
#define REQUEST_DEADLINE_MS 120000 /* coap_client gives up on a CON after ~93 s (RFC 7252 defaults) */
#define REFRESH_BEFORE_MS 60000    /* log in again this long before the token expires */
#define DEFAULT_MAX_AGE_S 60       /* RFC 7252 §5.10.5: Max-Age when the option is absent */

BUILD_ASSERT(sizeof(CONFIG_KUZZLE_JWT) <= JWT_CAP,
	     "CONFIG_KUZZLE_JWT is longer than CONFIG_COAP_EXTENDED_OPTIONS_LEN_VALUE - 5");
BUILD_ASSERT(CONFIG_COAP_CLIENT_MAX_REQUESTS >= 3, "two observations and one request at a time");
BUILD_ASSERT(CONFIG_COAP_CLIENT_MAX_EXTRA_OPTIONS >= 2, "Observe and the JWT");

#if defined(CONFIG_KUZZLE_DTLS)
#define DTLS_HANDSHAKE_MIN_MS 1000U /* mbed TLS resends a flight after 1 s, 2 s, 4 s, 8 s: */
#define DTLS_HANDSHAKE_MAX_MS 8000U /* a handshake with no answer gives up after ~15 s */
BUILD_ASSERT(sizeof(CONFIG_KUZZLE_PSK_KEY) > 1, "set CONFIG_KUZZLE_PSK_KEY (overlay-dtls.conf)");
BUILD_ASSERT(sizeof(CONFIG_KUZZLE_PSK_IDENTITY) > 1, "set CONFIG_KUZZLE_PSK_IDENTITY");
#if defined(CONFIG_MBEDTLS_PSK_MAX_LEN)
BUILD_ASSERT(sizeof(CONFIG_KUZZLE_PSK_KEY) - 1 <= CONFIG_MBEDTLS_PSK_MAX_LEN,
	     "CONFIG_KUZZLE_PSK_KEY is longer than CONFIG_MBEDTLS_PSK_MAX_LEN");
#endif
#endif

/* Why the loop must open a new session (network_changed). */
enum { NET_OK, NET_CHANGED, NET_ERROR };

static struct coap_client client;
static int sock = -1;
static atomic_t network_changed; /* NET_*: a new session is due */
static struct sockaddr_in server;
static int64_t session_retry_at;

/* Wakes the loop: an answer, a relation's news, a network event. */
static K_SEM_DEFINE(wake, 0, 1);

/* The step whose request is in flight. on_answer (coap_client's thread) fills `answer` only
 * while it is WAITING, then sets it DONE; the loop reads it and sets it IDLE. */
enum step { STEP_NONE, STEP_LOGIN, STEP_CLOCK, STEP_REPORT };
enum { ANSWER_IDLE, ANSWER_WAITING, ANSWER_DONE };
static struct coap_client_request request;
static struct {
	atomic_t state;
	int16_t code; /* CoAP code (class << 5 | detail), or a negative errno */
	uint8_t body[ANSWER_MAX];
	size_t len;
	int64_t received_at;
} answer;
static enum step step;
static int64_t step_sent_at;

/* The observation of the commands collection. Two relations, so that a renewal can be
 * answered before the relation it replaces is dropped. The callback moves a relation from
 * REGISTERING to ACTIVE or ENDED (compare-and-swap: the loop may drop it meanwhile), and
 * records when it was last heard from; the loop decides what to do about it. */
enum { REL_FREE, REL_REGISTERING, REL_ACTIVE, REL_ENDED };
struct relation {
	struct coap_client_request req;
	bool renewal;       /* written before coap_client_req, read by the callback */
	atomic_t state;     /* REL_* */
	atomic_t heard_at;  /* k_uptime_get_32() when it was last heard from */
	atomic_t max_age_s; /* the Max-Age it then announced */
};
static struct relation relations[2];
static struct relation *current, *renewing; /* the loop's only */
static int64_t obs_retry_at;
static uint32_t obs_backoff_ms = BACKOFF_FIRST_MS;
static bool renew_for_token;

static char jwt[JWT_CAP];
static int64_t jwt_expires_at = -1; /* server clock, ms; -1: never */
static atomic_t need_login;
static bool refreshing; /* the login under way replaces a token about to expire */
static int64_t login_retry_at;
static uint32_t login_backoff_ms = BACKOFF_FIRST_MS;

static bool clock_synced;
static int64_t clock_offset_ms; /* server time = k_uptime_get() + offset */
static int64_t clock_retry_at;

static atomic_t period_ms = ATOMIC_INIT(CONFIG_KUZZLE_PERIOD_MS);
static uint32_t docs;
static int64_t next_report_ms, last_report_ms;
static struct {
	double temperature;
	uint32_t humidity;
	uint64_t uptime, ts;
	uint8_t body[64];
	size_t len;
} reading; /* the report in flight */

static struct net_mgmt_event_callback l4_callback;

/* coaps with neither a JWT nor a username: the plugin runs every request as the Kuzzle identity
 * (API key) its credentials map the PSK identity to. Nothing to log in with, no jwt to send. */
static bool use_identity(void)
{
	return IS_ENABLED(CONFIG_KUZZLE_DTLS) && CONFIG_KUZZLE_JWT[0] == '\0' &&
	       CONFIG_KUZZLE_USERNAME[0] == '\0';
}

static bool use_login(void) { return CONFIG_KUZZLE_JWT[0] == '\0' && !use_identity(); }

/* coaps: a request failed at the network level, or the observation went silent: the DTLS
 * session may be gone (a close_notify after an idle expiry, a server restart, a new NAT mapping).
 * A new socket shakes hands again. Not for our own cancellations (-ECANCELED) nor for what
 * coap_client_req refuses before sending (-EAGAIN: busy, -EALREADY, -EINVAL, -EMSGSIZE: a path
 * too long): -ETIMEDOUT (no answer), a failed send (coap_client_req passes on -1), a socket error.
 * Any thread may call it. */
static void session_lost(const char *why, int code)
{
	if (!IS_ENABLED(CONFIG_KUZZLE_DTLS) || code >= 0 || code == -ECANCELED || code == -EAGAIN ||
	    code == -EALREADY || code == -EINVAL || code == -EMSGSIZE) {
		return;
	}
	if (atomic_cas(&network_changed, NET_OK, NET_ERROR)) {
		printk("dtls session lost reason=%s code=%d\n", why, code);
		k_sem_give(&wake);
	}
}

/* Logged in, clock read: reports and the observation can go. */
static bool ready(void) { return sock >= 0 && !atomic_get(&need_login) && clock_synced; }

static uint32_t next_backoff(uint32_t backoff)
{
	return backoff >= BACKOFF_MAX_MS / 2 ? BACKOFF_MAX_MS : backoff * 2;
}

/* ------------------------------------------------------------------ zcbor */

/* In the map zs is in, moves to the value of the text key `key`. */
static bool map_find(zcbor_state_t *zs, const char *key, size_t key_len)
{
	while (!zcbor_array_at_end(zs)) {
		struct zcbor_string found;

		if (zcbor_tstr_decode(zs, &found)) {
			if (found.len == key_len && memcmp(found.value, key, key_len) == 0) {
				return true;
			}
		} else if (!zcbor_any_skip(zs, NULL)) { /* a key that is not text */
			return false;
		}
		if (!zcbor_any_skip(zs, NULL)) { /* its value */
			return false;
		}
	}
	return false;
}

/* Enters nested maps along a dot-separated path of keys: "result._source.period". */
static bool find_path(zcbor_state_t *zs, const char *path)
{
	for (;;) {
		const char *dot = strchr(path, '.');
		size_t len = dot ? (size_t)(dot - path) : strlen(path);

		if (!zcbor_map_start_decode(zs) || !map_find(zs, path, len)) {
			return false;
		}
		if (dot == NULL) {
			return true;
		}
		path = dot + 1;
	}
}

static bool cbor_text(const uint8_t *payload, size_t len, const char *path, char *out, size_t cap)
{
	ZCBOR_STATE_D(zs, 4, payload, len, 1, 0);
	struct zcbor_string text;

	if (!find_path(zs, path) || !zcbor_tstr_decode(zs, &text) || text.len >= cap) {
		return false;
	}
	memcpy(out, text.value, text.len);
	out[text.len] = '\0';
	return true;
}

static bool cbor_int(const uint8_t *payload, size_t len, const char *path, int64_t *out)
{
	ZCBOR_STATE_D(zs, 4, payload, len, 1, 0);

	return find_path(zs, path) && zcbor_int64_decode(zs, out);
}

static size_t encode_login(uint8_t *buf, size_t cap)
{
	ZCBOR_STATE_E(zs, 1, buf, cap, 0);
	bool ok = zcbor_map_start_encode(zs, 2) &&
		  zcbor_tstr_put_lit(zs, "username") &&
		  zcbor_tstr_encode_ptr(zs, CONFIG_KUZZLE_USERNAME, strlen(CONFIG_KUZZLE_USERNAME)) &&
		  zcbor_tstr_put_lit(zs, "password") &&
		  zcbor_tstr_encode_ptr(zs, CONFIG_KUZZLE_PASSWORD, strlen(CONFIG_KUZZLE_PASSWORD)) &&
		  zcbor_map_end_encode(zs, 2);

	return ok ? (size_t)(zs->payload - buf) : 0;
}

/* {"temperature": float, "humidity": uint, "uptime": uint, "ts": uint64}. zcbor writes the
 * temperature as a float64, where kcbor picks the shortest exact width: the same number. */
static size_t encode_reading(uint8_t *buf, size_t cap, double temperature, uint32_t humidity,
			     uint64_t uptime, uint64_t ts)
{
	ZCBOR_STATE_E(zs, 1, buf, cap, 0);
	bool ok = zcbor_map_start_encode(zs, 4) &&
		  zcbor_tstr_put_lit(zs, "temperature") && zcbor_float64_put(zs, temperature) &&
		  zcbor_tstr_put_lit(zs, "humidity") && zcbor_uint32_put(zs, humidity) &&
		  zcbor_tstr_put_lit(zs, "uptime") && zcbor_uint64_put(zs, uptime) &&
		  zcbor_tstr_put_lit(zs, "ts") && zcbor_uint64_put(zs, ts) &&
		  zcbor_map_end_encode(zs, 4);

	return ok ? (size_t)(zs->payload - buf) : 0;
}

/* --------------------------------------------------------------- requests */

static void print_error(const char *what, int16_t code, const uint8_t *body, size_t len)
{
	char id[64] = "-", message[128] = "";

	if (code < 0) {
		printk("%s reason=errno_%d\n", what, -code);
		return;
	}
	cbor_text(body, len, "id", id, sizeof(id));
	cbor_text(body, len, "message", message, sizeof(message));
	printk("%s code=%d.%02d id=%s message=\"%s\"\n", what, code >> 5, code & 0x1f, id, message);
}

static bool is_success(int16_t code) { return code >= 0 && (code >> 5) == 2; }

static bool is_unauthorized(int16_t code) { return code == COAP_RESPONSE_CODE_UNAUTHORIZED; }

static void on_unauthorized(int16_t code)
{
	if (is_unauthorized(code) && use_login()) {
		atomic_set(&need_login, 1);
	}
}

/* A CON request; `cb` answers it. Its path and options are copied by coap_client_req. */
static void init_request(struct coap_client_request *req, enum coap_method method,
			 const uint8_t *payload, size_t len, coap_client_response_cb_t cb,
			 void *user_data)
{
	memset(req, 0, sizeof(*req));
	req->method = method;
	req->confirmable = true;
	req->fmt = COAP_CONTENT_FORMAT_APP_CBOR;
	req->payload = payload;
	req->len = len;
	req->cb = cb;
	req->user_data = user_data;
}

/* Writes "api/...?query" into the request; false if it is over CONFIG_COAP_CLIENT_MAX_PATH_LENGTH. */
static bool set_path(struct coap_client_request *req, const char *format, ...)
{
	va_list args;

	va_start(args, format);
	int len = vsnprintk(req->path, sizeof(req->path), format, args);

	va_end(args);
	if (len < 0 || (size_t)len >= sizeof(req->path)) {
		printk("error request reason=path_too_long max=%u\n", (unsigned)sizeof(req->path) - 1);
		return false;
	}
	return true;
}

/* "jwt=<token>" as a Uri-Query option: it always fits (JWT_CAP). None without a token (coaps,
 * DTLS identity): the plugin then uses the API key of the PSK identity. */
static void add_jwt(struct coap_client_request *req)
{
	if (jwt[0] == '\0') {
		return;
	}
	struct coap_client_option *option = &req->options[req->num_options++];

	option->code = COAP_OPTION_URI_QUERY;
	option->len = (uint16_t)snprintk((char *)option->value, sizeof(option->value), "jwt=%s", jwt);
}

/* coap_client's thread: keeps the answer of the step in flight, then wakes the loop. */
static void on_answer(const struct coap_client_response_data *data, void *user_data)
{
	ARG_UNUSED(user_data);
	if (atomic_get(&answer.state) != ANSWER_WAITING) {
		return; /* given up by the loop (deadline, new session) */
	}
	if (data->offset == 0) {
		answer.len = 0;
	}
	answer.code = data->result_code;
	if (data->payload != NULL && data->offset + data->payload_len <= sizeof(answer.body)) {
		memcpy(answer.body + data->offset, data->payload, data->payload_len);
		answer.len = data->offset + data->payload_len;
	}
	if (data->result_code < 0 || data->last_block) {
		answer.received_at = k_uptime_get();
		if (atomic_cas(&answer.state, ANSWER_WAITING, ANSWER_DONE)) {
			k_sem_give(&wake);
		}
	}
}

/* Where coap_client sends: nowhere on coaps, whose socket is connected to the server. */
static const struct sockaddr *server_addr(void)
{
	return IS_ENABLED(CONFIG_KUZZLE_DTLS) ? NULL : (const struct sockaddr *)&server;
}

/* Sends `request` for `next`; its answer, or failure, comes back through the loop. */
static void send_step(enum step next, bool built)
{
	int rc = -EMSGSIZE;

	step = next;
	step_sent_at = k_uptime_get();
	atomic_set(&answer.state, ANSWER_WAITING);
	if (built) {
		rc = coap_client_req(&client, sock, server_addr(), &request, NULL);
	}
	if (rc < 0) {
		answer.code = (int16_t)rc;
		answer.len = 0;
		atomic_set(&answer.state, ANSWER_DONE);
	}
}

/* coap_client ends a CON on its own (~93 s); this guards against one it would never end. */
static void check_deadline(int64_t now)
{
	if (step == STEP_NONE || now - step_sent_at < REQUEST_DEADLINE_MS ||
	    !atomic_cas(&answer.state, ANSWER_WAITING, ANSWER_IDLE)) {
		return;
	}
	coap_client_cancel_request(&client, &request); /* returns once no callback runs */
	answer.code = -ETIMEDOUT;
	answer.len = 0;
	atomic_set(&answer.state, ANSWER_DONE);
}

/* ------------------------------------------------------------ observation */

static void apply_period(int64_t period, const char *id)
{
	uint32_t old = (uint32_t)atomic_get(&period_ms);

	if ((uint32_t)period == old) {
		printk("period unchanged ms=%u command=%s\n", old, id);
		return;
	}
	printk("period changed old_ms=%u new_ms=%u command=%s\n", old, (uint32_t)period, id);
	atomic_set(&period_ms, (atomic_val_t)period);
}

static void notification(int seq, const uint8_t *payload, size_t len)
{
	char action[16] = "-", id[48] = "-";
	int64_t period;

	cbor_text(payload, len, "action", action, sizeof(action));
	cbor_text(payload, len, "result._id", id, sizeof(id));
	if (cbor_int(payload, len, "result._source.period", &period) && period >= PERIOD_MIN_MS &&
	    period <= PERIOD_MAX_MS) {
		printk("notification seq=%d action=%s id=%s period_ms=%lld\n", seq, action, id,
		       (long long)period);
		apply_period(period, id);
	} else {
		printk("notification seq=%d action=%s id=%s period_ms=none\n", seq, action, id);
	}
}

/* Liveness: the relation is heard from now, with the Max-Age it announces. */
static uint32_t heard(struct relation *rel, const struct coap_packet *packet)
{
	int max_age = coap_get_option_int(packet, COAP_OPTION_MAX_AGE);
	uint32_t max_age_s = max_age >= 0 ? (uint32_t)max_age : DEFAULT_MAX_AGE_S;

	atomic_set(&rel->max_age_s, (atomic_val_t)max_age_s);
	atomic_set(&rel->heard_at, (atomic_val_t)k_uptime_get_32());
	return max_age_s;
}

static void registered(struct relation *rel, int seq, const struct coap_client_response_data *data,
		       uint32_t max_age_s)
{
	char channel[96] = "-";

	if (!atomic_cas(&rel->state, REL_REGISTERING, REL_ACTIVE)) {
		return; /* dropped by the loop meanwhile */
	}
	cbor_text(data->payload, data->payload_len, "channel", channel, sizeof(channel));
	printk("observe %s seq=%d channel=%s max_age_s=%u\n", rel->renewal ? "renewed" : "registered",
	       seq, channel, max_age_s);
	k_sem_give(&wake);
}

/* A refused registration, or the end of a relation: an error, or an answer without Observe. */
static void ended(struct relation *rel, atomic_val_t state, const struct coap_client_response_data *data)
{
	const char *what = state == REL_REGISTERING ? "observe failed" : "observe ended";

	if (!atomic_cas(&rel->state, state, REL_ENDED)) {
		return;
	}
	if (is_success(data->result_code)) {
		printk("%s code=%d.%02d reason=no_observe_option\n", what, data->result_code >> 5,
		       data->result_code & 0x1f);
	} else {
		print_error(what, data->result_code, data->payload, data->payload_len);
	}
	on_unauthorized(data->result_code);
	session_lost("observe", data->result_code);
	k_sem_give(&wake);
}

/* coap_client's thread: the registration's answer, the notifications, the heartbeats (2.03,
 * which coap_client acknowledges like any CON) and the final answer of one relation. */
static void on_observation(const struct coap_client_response_data *data, void *user_data)
{
	struct relation *rel = user_data;
	atomic_val_t state = atomic_get(&rel->state);
	int seq = data->packet ? coap_get_option_int(data->packet, COAP_OPTION_OBSERVE) : -ENOENT;

	if (state != REL_REGISTERING && state != REL_ACTIVE) {
		return; /* dropped by the loop: renewed, ended, or a new session */
	}
	if (!is_success(data->result_code) || seq < 0) {
		ended(rel, state, data);
		return;
	}
	uint32_t max_age_s = heard(rel, data->packet);

	if (state == REL_REGISTERING) {
		registered(rel, seq, data, max_age_s);
	} else if (data->result_code == COAP_RESPONSE_CODE_VALID) {
		printk("observe heartbeat seq=%d max_age_s=%u\n", seq, max_age_s);
	} else {
		notification(seq, data->payload, data->payload_len);
	}
}

/* The relation that is neither current nor renewing. */
static struct relation *spare_relation(void)
{
	return current == &relations[0] || renewing == &relations[0] ? &relations[1] : &relations[0];
}

/* GET /api/realtime/subscribe?index=&collection=&envelope=compact, Observe: 0 and the JWT.
 * NULL if it cannot be sent. */
static struct relation *start_registration(bool renewal)
{
	struct relation *rel = spare_relation();
	struct coap_client_request *req = &rel->req;

	init_request(req, COAP_METHOD_GET, NULL, 0, on_observation, rel);
	req->options[0].code = COAP_OPTION_OBSERVE;
	req->options[0].len = 0; /* Observe: 0 (register) is the empty value */
	req->num_options = 1;
	if (!set_path(req, "api/realtime/subscribe?index=%s&collection=%s&" QUERY_COMPACT,
		      CONFIG_KUZZLE_INDEX, CONFIG_KUZZLE_COMMANDS)) {
		return NULL;
	}
	add_jwt(req);
	rel->renewal = renewal;
	atomic_set(&rel->heard_at, (atomic_val_t)k_uptime_get_32());
	atomic_set(&rel->max_age_s, DEFAULT_MAX_AGE_S);
	atomic_set(&rel->state, REL_REGISTERING);
	int rc = coap_client_req(&client, sock, server_addr(), req, NULL);

	if (rc < 0) {
		printk("error observe reason=cannot_send errno=%d\n", -rc);
		atomic_set(&rel->state, REL_FREE);
		session_lost("send", rc);
		return NULL;
	}
	return rel;
}

/* Forgets a relation here. coap_client answers its later messages with RST (no matching
 * request), which ends it on the server. Its callback (-ECANCELED) finds it FREE. */
static void drop(struct relation *rel)
{
	atomic_set(&rel->state, REL_FREE);
	coap_client_cancel_request(&client, &rel->req);
}

static void schedule_registration(void)
{
	obs_retry_at = k_uptime_get() + obs_backoff_ms;
	printk("observe retry_in_ms=%u\n", obs_backoff_ms);
	obs_backoff_ms = next_backoff(obs_backoff_ms);
}

/* A new relation, when there is none. */
static void register_observation(void)
{
	printk("observe register index=%s collection=%s\n", CONFIG_KUZZLE_INDEX, CONFIG_KUZZLE_COMMANDS);
	renew_for_token = false; /* it carries the current token */
	current = start_registration(false);
	if (current == NULL) {
		schedule_registration();
	}
}

/* A renewal failed or could not be sent: drop both relations, register again after a backoff. */
static void abandon_relations(void)
{
	if (renewing != NULL) {
		drop(renewing);
		renewing = NULL;
	}
	if (current != NULL) {
		drop(current);
		current = NULL;
	}
	schedule_registration();
}

/* Registers again while the current relation goes on: it is dropped once this is answered. */
static void renew_observation(const char *reason)
{
	printk("observe renew reason=%s\n", reason);
	renewing = start_registration(true);
	if (renewing == NULL) {
		abandon_relations();
	}
}

/* Nothing heard for Max-Age and a margin (the server's retransmissions): it may be gone. */
static bool is_silent(const struct relation *rel)
{
	uint32_t quiet = k_uptime_get_32() - (uint32_t)atomic_get(&rel->heard_at);

	return quiet > (uint64_t)(uint32_t)atomic_get(&rel->max_age_s) * 1250U + 2000U;
}

/* The loop's side of the observation: takes in what the callbacks recorded, then decides. */
static void follow_observation(int64_t now)
{
	if (renewing != NULL && atomic_get(&renewing->state) == REL_ACTIVE) {
		if (current != NULL) {
			drop(current);
		}
		current = renewing;
		renewing = NULL;
	} else if (renewing != NULL && atomic_get(&renewing->state) == REL_ENDED) {
		abandon_relations();
	}
	if (current != NULL && atomic_get(&current->state) == REL_ENDED) {
		drop(current);
		current = renewing; /* a renewal under way takes over */
		renewing = NULL;
		if (current == NULL) {
			schedule_registration();
		}
	}
	if (!ready()) {
		return;
	}
	if (current == NULL) {
		if (now >= obs_retry_at) {
			register_observation();
		}
		return;
	}
	if (renewing != NULL || atomic_get(&current->state) != REL_ACTIVE) {
		return;
	}
	obs_backoff_ms = BACKOFF_FIRST_MS;
	if (is_silent(current) && IS_ENABLED(CONFIG_KUZZLE_DTLS)) {
		session_lost("silent", -ETIMEDOUT); /* a new handshake, then a new registration */
	} else if (is_silent(current)) {
		renew_observation("silent");
	} else if (renew_for_token) {
		renew_for_token = false;
		renew_observation("token"); /* Kuzzle then links the subscription to the new token */
	}
}

/* ------------------------------------------------------------------ steps */

static void start_login(void)
{
	static uint8_t body[160];
	size_t len = encode_login(body, sizeof(body));

	printk("login user=%s\n", CONFIG_KUZZLE_USERNAME);
	init_request(&request, COAP_METHOD_POST, body, len, on_answer, NULL);
	send_step(STEP_LOGIN, set_path(&request, "api/auth/login?strategy=local&" QUERY_COMPACT));
}

static void login_failed(void)
{
	login_retry_at = k_uptime_get() + login_backoff_ms;
	login_backoff_ms = next_backoff(login_backoff_ms);
}

static void login_answered(void)
{
	int64_t expires_at = -1;

	if (!is_success(answer.code)) {
		print_error("login failed", answer.code, answer.body, answer.len);
		login_failed();
		return;
	}
	if (!cbor_text(answer.body, answer.len, "jwt", jwt, sizeof(jwt))) {
		printk("login failed reason=bad_answer (no jwt, or over %u bytes)\n", (unsigned)JWT_CAP - 1);
		login_failed();
		return;
	}
	cbor_int(answer.body, answer.len, "expiresAt", &expires_at);
	jwt_expires_at = expires_at;
	printk("login ok user=%s expires_at=%lld jwt_bytes=%u\n", CONFIG_KUZZLE_USERNAME,
	       (long long)expires_at, (unsigned)strlen(jwt));
	atomic_set(&need_login, 0);
	login_backoff_ms = BACKOFF_FIRST_MS;
	renew_for_token = renew_for_token || refreshing;
	refreshing = false;
}

static void start_clock(void)
{
	init_request(&request, COAP_METHOD_POST, NULL, 0, on_answer, NULL);
	bool built = set_path(&request, "api/server/now?" QUERY_COMPACT);

	add_jwt(&request);
	send_step(STEP_CLOCK, built);
}

static void clock_answered(void)
{
	int64_t now;

	if (!is_success(answer.code) || !cbor_int(answer.body, answer.len, "now", &now)) {
		print_error("clock failed", answer.code, answer.body, answer.len);
		on_unauthorized(answer.code);
		clock_retry_at = k_uptime_get() + CLOCK_RETRY_MS;
		return;
	}
	clock_offset_ms = now - (step_sent_at + answer.received_at) / 2;
	clock_synced = true;
	printk("clock now=%lld rtt_ms=%lld\n", (long long)now,
	       (long long)(answer.received_at - step_sent_at));
}

/* Made-up values, as kiot_simulate() makes them for the other examples: read a sensor here. */
static void read_sensor(int64_t now)
{
	uint32_t tick = docs % 78, tri = tick < 39 ? tick : 77 - tick;

	reading.temperature = 19.5 + 0.1 * tri + 0.05;
	reading.humidity = 40 + docs % 10;
	reading.uptime = (uint64_t)now / 1000;
	reading.ts = (uint64_t)(now + clock_offset_ms);
	reading.len = encode_reading(reading.body, sizeof(reading.body), reading.temperature,
				     reading.humidity, reading.uptime, reading.ts);
}

/* At a fixed rate: the next report is due one period after this one was due. */
static bool report_due(int64_t now)
{
	uint32_t period = (uint32_t)atomic_get(&period_ms);

	if (next_report_ms > last_report_ms + period) {
		next_report_ms = last_report_ms + period; /* a command shortened the period */
	}
	if (now < next_report_ms) {
		return false;
	}
	last_report_ms = now;
	next_report_ms += period;
	if (next_report_ms <= now) {
		next_report_ms = now + period; /* fell behind */
	}
	return true;
}

static void start_report(int64_t now)
{
	read_sensor(now);
	init_request(&request, COAP_METHOD_POST, reading.body, reading.len, on_answer, NULL);
	bool built = set_path(&request, "api/document/create?index=%s&collection=%s&" QUERY_COMPACT,
			      CONFIG_KUZZLE_INDEX, CONFIG_KUZZLE_SENSORS);

	add_jwt(&request);
	send_step(STEP_REPORT, built);
}

static void report_answered(void)
{
	char id[48] = "-";

	if (!is_success(answer.code)) {
		print_error("report failed", answer.code, answer.body, answer.len);
		on_unauthorized(answer.code);
		return;
	}
	cbor_text(answer.body, answer.len, "_id", id, sizeof(id));
	docs++;
	int centi = (int)(reading.temperature * 100 + 0.5);

	printk("report sent n=%u id=%s temperature=%d.%02d humidity=%u uptime=%llu ts=%llu period_ms=%u bytes=%u\n",
	       docs, id, centi / 100, centi % 100, reading.humidity,
	       (unsigned long long)reading.uptime, (unsigned long long)reading.ts,
	       (uint32_t)atomic_get(&period_ms), (unsigned)reading.len);
}

static void finish_step(void)
{
	enum step done = step;

	step = STEP_NONE;
	if (done == STEP_LOGIN) {
		login_answered();
	} else if (done == STEP_CLOCK) {
		clock_answered();
	} else if (done == STEP_REPORT) {
		report_answered();
	}
	session_lost(done == STEP_LOGIN ? "login" : done == STEP_CLOCK ? "clock" : "report",
		     answer.code);
	atomic_set(&answer.state, ANSWER_IDLE);
}

static bool token_expires_soon(void)
{
	return use_login() && jwt_expires_at > 0 &&
	       k_uptime_get() + clock_offset_ms > jwt_expires_at - REFRESH_BEFORE_MS;
}

/* Login, then clock, then reports; each one when its time has come. */
static void start_next_step(int64_t now)
{
	if (atomic_get(&need_login)) {
		if (now >= login_retry_at) {
			start_login();
		}
	} else if (!clock_synced) {
		if (now >= clock_retry_at) {
			start_clock();
		}
	} else if (token_expires_soon()) {
		printk("login refresh reason=token_expires_soon\n");
		refreshing = true;
		atomic_set(&need_login, 1);
		start_login();
	} else if (report_due(now)) {
		start_report(now);
	}
}

/* --------------------------------------------------------------- network */

static void on_l4_event(struct net_mgmt_event_callback *cb, uint64_t event, struct net_if *iface)
{
	ARG_UNUSED(cb);
	ARG_UNUSED(iface);
	if (event == NET_EVENT_L4_CONNECTED) {
		printk("network up\n");
		atomic_set(&network_changed, NET_CHANGED);
		k_sem_give(&wake);
	} else if (event == NET_EVENT_L4_DISCONNECTED) {
		printk("network down\n");
	}
}

/* Forgets every request of the socket: their callbacks (-ECANCELED) find nothing waiting. */
static void close_session(void)
{
	atomic_set(&answer.state, ANSWER_IDLE);
	step = STEP_NONE;
	atomic_set(&relations[0].state, REL_FREE);
	atomic_set(&relations[1].state, REL_FREE);
	current = NULL;
	renewing = NULL;
	coap_client_cancel_requests(&client); /* also lets coap_client's poll drop the socket (~0.5 s) */
	zsock_close(sock);
	sock = -1;
}

#if defined(CONFIG_KUZZLE_DTLS)
/* The PSK and its identity, under one security tag, for every session's socket. The buffers stay
 * where they are (tls_credential_add keeps a pointer): string literals. */
static int add_credentials(void)
{
	int rc = tls_credential_add(CONFIG_KUZZLE_DTLS_SEC_TAG, TLS_CREDENTIAL_PSK,
				    CONFIG_KUZZLE_PSK_KEY, sizeof(CONFIG_KUZZLE_PSK_KEY) - 1);

	if (rc == 0 || rc == -EEXIST) {
		rc = tls_credential_add(CONFIG_KUZZLE_DTLS_SEC_TAG, TLS_CREDENTIAL_PSK_ID,
					CONFIG_KUZZLE_PSK_IDENTITY,
					sizeof(CONFIG_KUZZLE_PSK_IDENTITY) - 1);
	}
	return rc == -EEXIST ? 0 : rc;
}

/* DTLS options of a new socket, then connect(): the handshake (blocking, at most ~15 s). */
static int dtls_connect(int fd)
{
	static const sec_tag_t tags[] = {CONFIG_KUZZLE_DTLS_SEC_TAG};
	int verify = TLS_PEER_VERIFY_NONE; /* PSK: no certificate to verify */
	int role = TLS_DTLS_ROLE_CLIENT;
	uint32_t min_ms = DTLS_HANDSHAKE_MIN_MS, max_ms = DTLS_HANDSHAKE_MAX_MS;

	if (zsock_setsockopt(fd, SOL_TLS, TLS_SEC_TAG_LIST, tags, sizeof(tags)) < 0 ||
	    zsock_setsockopt(fd, SOL_TLS, TLS_PEER_VERIFY, &verify, sizeof(verify)) < 0 ||
	    zsock_setsockopt(fd, SOL_TLS, TLS_DTLS_ROLE, &role, sizeof(role)) < 0 ||
	    zsock_setsockopt(fd, SOL_TLS, TLS_DTLS_HANDSHAKE_TIMEOUT_MIN, &min_ms, sizeof(min_ms)) < 0 ||
	    zsock_setsockopt(fd, SOL_TLS, TLS_DTLS_HANDSHAKE_TIMEOUT_MAX, &max_ms, sizeof(max_ms)) < 0) {
		printk("error dtls reason=setsockopt errno=%d\n", errno);
		return -1;
	}
	int64_t start = k_uptime_get();

	if (zsock_connect(fd, (struct sockaddr *)&server, sizeof(server)) < 0) {
		printk("error dtls reason=handshake errno=%d ms=%lld\n", errno,
		       (long long)(k_uptime_get() - start));
		return -1;
	}
	printk("dtls handshake ok identity=%s ms=%lld\n", CONFIG_KUZZLE_PSK_IDENTITY,
	       (long long)(k_uptime_get() - start));
	return 0;
}
#endif

/* A new socket (a new source port: a new endpoint for the server; on coaps, a new handshake):
 * clock and registration again. */
static void open_session(int64_t now, atomic_val_t why)
{
	printk("network %s: new session, re-registering\n", why == NET_ERROR ? "error" : "changed");
	if (sock >= 0) {
		close_session();
	}
	clock_synced = false;
#if defined(CONFIG_KUZZLE_DTLS)
	/* At most one session every SESSION_RETRY_MS, whatever fails. */
	session_retry_at = now + SESSION_RETRY_MS;
	sock = zsock_socket(AF_INET, SOCK_DGRAM, IPPROTO_DTLS_1_2);
	if (sock >= 0 && dtls_connect(sock) < 0) {
		zsock_close(sock);
		sock = -1;
		atomic_set(&network_changed, NET_ERROR);
		session_retry_at = k_uptime_get() + SESSION_RETRY_MS; /* after the handshake's own time */
		return;
	}
#else
	sock = zsock_socket(AF_INET, SOCK_DGRAM, IPPROTO_UDP);
#endif
	if (sock < 0) {
		printk("error socket errno=%d\n", errno);
		atomic_set(&network_changed, NET_CHANGED);
		session_retry_at = now + SESSION_RETRY_MS;
		return;
	}
	printk("session open remote=%s:%d\n", CONFIG_KUZZLE_HOST, CONFIG_KUZZLE_COAP_PORT);
	clock_retry_at = 0;
	obs_retry_at = 0;
	obs_backoff_ms = BACKOFF_FIRST_MS;
}

/* Up to LOOP_WAIT_MAX_MS, less when a report falls due sooner. */
static int64_t loop_wait_ms(void)
{
	int64_t wait = next_report_ms - k_uptime_get();

	if (step != STEP_NONE || !ready() || wait > LOOP_WAIT_MAX_MS) {
		return LOOP_WAIT_MAX_MS;
	}
	return wait > 0 ? wait : 0;
}

int main(void)
{
	printk("start host=%s port=%d index=%s sensors=%s commands=%s period_ms=%u auth=%s transport=%s\n",
	       CONFIG_KUZZLE_HOST, CONFIG_KUZZLE_COAP_PORT, CONFIG_KUZZLE_INDEX, CONFIG_KUZZLE_SENSORS,
	       CONFIG_KUZZLE_COMMANDS, CONFIG_KUZZLE_PERIOD_MS,
	       use_login() ? "login" : use_identity() ? "dtls_identity" : "jwt",
	       IS_ENABLED(CONFIG_KUZZLE_DTLS) ? "dtls-psk" : "udp");
	server.sin_family = AF_INET;
	server.sin_port = htons(CONFIG_KUZZLE_COAP_PORT);
	if (zsock_inet_pton(AF_INET, CONFIG_KUZZLE_HOST, &server.sin_addr) != 1) {
		printk("error config reason=bad_host host=%s\n", CONFIG_KUZZLE_HOST);
		return 1;
	}
	if (use_login()) {
		atomic_set(&need_login, 1);
	} else {
		strcpy(jwt, CONFIG_KUZZLE_JWT); /* fits: BUILD_ASSERT above; empty: DTLS identity */
	}
#if defined(CONFIG_KUZZLE_DTLS)
	int rc = add_credentials();

	if (rc < 0) {
		printk("error config reason=tls_credential_add errno=%d\n", -rc);
		return 1;
	}
#endif
	coap_client_init(&client, NULL);
	net_mgmt_init_event_callback(&l4_callback, on_l4_event,
				     NET_EVENT_L4_CONNECTED | NET_EVENT_L4_DISCONNECTED);
	net_mgmt_add_event_callback(&l4_callback);
	conn_mgr_mon_resend_status();

	for (;;) {
		k_sem_take(&wake, K_MSEC(loop_wait_ms()));
		int64_t now = k_uptime_get();

		if (now >= session_retry_at && atomic_get(&network_changed) != NET_OK) {
			open_session(now, atomic_set(&network_changed, NET_OK));
		}
		if (sock < 0) {
			continue; /* no network yet */
		}
		check_deadline(now);
		if (atomic_get(&answer.state) == ANSWER_DONE) {
			finish_step();
		}
		follow_observation(now);
		if (step == STEP_NONE) {
			start_next_step(now);
		}
	}
}
