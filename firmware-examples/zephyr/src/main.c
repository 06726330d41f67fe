/*
 * Kuzzle CoAP sensor on Zephyr: coap_client (requests, Observe) and zcbor (CBOR).
 *
 * The same job and the same CoAP requests as the other examples (firmware-examples/README.md):
 * log in (or use an API key), read the server clock, observe the `commands` collection,
 * create a `sensors` document every period, apply the period a command sets, register the
 * observation again when it ends or when the network comes back. Every step is printed as
 * one line "<event> key=value ...", as the POSIX example prints them.
 *
 * Written for Zephyr 4.3's coap_client API (response callback taking
 * struct coap_client_response_data, path as an array in struct coap_client_request);
 * see README.md for older versions.
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

#define QUERY_COMPACT "envelope=compact"
#define PERIOD_MIN_MS 100
#define PERIOD_MAX_MS 86400000
#define ANSWER_MAX 1024
#define JWT_MAX 512

static struct coap_client client;
static int sock = -1;
static struct sockaddr_in server;

/* The one request the main thread waits for, answered in coap_client's thread. */
static struct coap_client_request request;
static K_SEM_DEFINE(answered, 0, 1);
static struct {
	int16_t code; /* CoAP code (class << 5 | detail), or a negative errno */
	uint8_t body[ANSWER_MAX];
	size_t len;
} answer;

/* The observation of the commands collection. */
enum { OBS_IDLE, OBS_REGISTERING, OBS_ACTIVE };
static struct coap_client_request observation;
static atomic_t obs_state = ATOMIC_INIT(OBS_IDLE);
static atomic_t obs_failed; /* set by the callback: the main thread schedules a retry */
static int64_t obs_retry_at;
static uint32_t obs_backoff_ms = 500;

static char jwt[JWT_MAX];
static atomic_t need_login;
static atomic_t period_ms = ATOMIC_INIT(CONFIG_KUZZLE_PERIOD_MS);
static bool clock_synced;
static int64_t clock_offset_ms; /* server time = k_uptime_get() + offset */
static uint32_t docs;
static int64_t next_report_ms, last_report_ms;

static atomic_t network_changed;
static K_SEM_DEFINE(network_up, 0, 1);
static struct net_mgmt_event_callback l4_callback;

static bool use_login(void) { return CONFIG_KUZZLE_JWT[0] == '\0'; }

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

/* ------------------------------------------------------------------- CoAP */

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

static void on_answer(const struct coap_client_response_data *data, void *user_data)
{
	ARG_UNUSED(user_data);
	if (data->offset == 0) {
		answer.len = 0;
	}
	answer.code = data->result_code;
	if (data->payload != NULL && data->offset + data->payload_len <= sizeof(answer.body)) {
		memcpy(answer.body + data->offset, data->payload, data->payload_len);
		answer.len = data->offset + data->payload_len;
	}
	if (data->last_block) {
		k_sem_give(&answered);
	}
}

/* A CON request, waited for. path_format builds "api/...?query" into the request's path. */
static int send_request(enum coap_method method, const uint8_t *payload, size_t len,
			const char *path_format, ...)
{
	va_list args;

	memset(&request, 0, sizeof(request));
	request.method = method;
	request.confirmable = true;
	va_start(args, path_format);
	vsnprintk(request.path, sizeof(request.path), path_format, args);
	va_end(args);
	request.fmt = COAP_CONTENT_FORMAT_APP_CBOR;
	request.payload = payload;
	request.len = len;
	request.cb = on_answer;
	k_sem_reset(&answered);
	int rc = coap_client_req(&client, sock, (struct sockaddr *)&server, &request, NULL);

	if (rc < 0) {
		answer.code = (int16_t)rc;
		return rc;
	}
	if (k_sem_take(&answered, K_SECONDS(120)) != 0) {
		answer.code = -ETIMEDOUT;
		return -ETIMEDOUT;
	}
	return answer.code < 0 ? answer.code : 0;
}

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

/* The registration's answer, the notifications and the final answer (coap_client's thread). */
static void on_observation(const struct coap_client_response_data *data, void *user_data)
{
	ARG_UNUSED(user_data);
	int observe = data->packet ? coap_get_option_int(data->packet, COAP_OPTION_OBSERVE) : -ENOENT;
	bool registering = atomic_get(&obs_state) == OBS_REGISTERING;

	if (is_success(data->result_code) && observe >= 0) {
		if (registering) {
			atomic_set(&obs_state, OBS_ACTIVE);
			printk("observe registered seq=%d\n", observe);
			return;
		}
		char action[16] = "-", id[48] = "-";
		int64_t period;

		cbor_text(data->payload, data->payload_len, "action", action, sizeof(action));
		cbor_text(data->payload, data->payload_len, "result._id", id, sizeof(id));
		if (cbor_int(data->payload, data->payload_len, "result._source.period", &period) &&
		    period >= PERIOD_MIN_MS && period <= PERIOD_MAX_MS) {
			printk("notification seq=%d action=%s id=%s period_ms=%lld\n", observe, action, id,
			       (long long)period);
			apply_period(period, id);
		} else {
			printk("notification seq=%d action=%s id=%s period_ms=none\n", observe, action, id);
		}
		return;
	}
	print_error(registering ? "observe failed" : "observe ended", data->result_code, data->payload,
		    data->payload_len);
	if (is_unauthorized(data->result_code) && use_login()) {
		atomic_set(&need_login, 1);
	}
	atomic_set(&obs_state, OBS_IDLE);
	atomic_set(&obs_failed, 1);
}

/* GET /api/realtime/subscribe?index=&collection=&jwt=&envelope=compact with Observe: 0. */
static void register_observation(void)
{
	memset(&observation, 0, sizeof(observation));
	observation.method = COAP_METHOD_GET;
	observation.confirmable = true;
	snprintk(observation.path, sizeof(observation.path),
		 "api/realtime/subscribe?index=%s&collection=%s&jwt=%s&" QUERY_COMPACT,
		 CONFIG_KUZZLE_INDEX, CONFIG_KUZZLE_COMMANDS, jwt);
	observation.options[0].code = COAP_OPTION_OBSERVE;
	observation.options[0].len = 0; /* Observe: 0 (register) is the empty value */
	observation.num_options = 1;
	observation.cb = on_observation;
	printk("observe register index=%s collection=%s\n", CONFIG_KUZZLE_INDEX, CONFIG_KUZZLE_COMMANDS);
	atomic_set(&obs_state, OBS_REGISTERING);
	if (coap_client_req(&client, sock, (struct sockaddr *)&server, &observation, NULL) < 0) {
		printk("error observe reason=cannot_send\n");
		atomic_set(&obs_state, OBS_IDLE);
		atomic_set(&obs_failed, 1);
	}
}

static void schedule_registration(void)
{
	obs_retry_at = k_uptime_get() + obs_backoff_ms;
	printk("observe retry_in_ms=%u\n", obs_backoff_ms);
	obs_backoff_ms = obs_backoff_ms >= 30000 ? 60000 : obs_backoff_ms * 2;
}

/* A new socket (a new source port: a new endpoint for the server). */
static int open_socket(void)
{
	if (sock >= 0) {
		coap_client_cancel_requests(&client);
		zsock_close(sock);
	}
	atomic_set(&obs_state, OBS_IDLE);
	atomic_set(&obs_failed, 0);
	sock = zsock_socket(AF_INET, SOCK_DGRAM, IPPROTO_UDP);
	if (sock < 0) {
		printk("error socket errno=%d\n", errno);
		return -errno;
	}
	server.sin_family = AF_INET;
	server.sin_port = htons(CONFIG_KUZZLE_COAP_PORT);
	if (zsock_inet_pton(AF_INET, CONFIG_KUZZLE_HOST, &server.sin_addr) != 1) {
		printk("error config reason=bad_host host=%s\n", CONFIG_KUZZLE_HOST);
		return -EINVAL;
	}
	printk("session open remote=%s:%d\n", CONFIG_KUZZLE_HOST, CONFIG_KUZZLE_COAP_PORT);
	return 0;
}

/* ------------------------------------------------------------------ steps */

static int login(void)
{
	static uint8_t body[160];
	size_t len = encode_login(body, sizeof(body));
	int64_t expires_at = -1;

	printk("login user=%s\n", CONFIG_KUZZLE_USERNAME);
	if (send_request(COAP_METHOD_POST, body, len, "api/auth/login?strategy=local&" QUERY_COMPACT) < 0 ||
	    !is_success(answer.code)) {
		print_error("login failed", answer.code, answer.body, answer.len);
		return -1;
	}
	if (!cbor_text(answer.body, answer.len, "jwt", jwt, sizeof(jwt))) {
		printk("login failed reason=bad_answer\n");
		return -1;
	}
	cbor_int(answer.body, answer.len, "expiresAt", &expires_at);
	printk("login ok user=%s expires_at=%lld jwt_bytes=%u\n", CONFIG_KUZZLE_USERNAME,
	       (long long)expires_at, (unsigned)strlen(jwt));
	return 0;
}

static int sync_clock(void)
{
	int64_t sent = k_uptime_get(), now;

	if (send_request(COAP_METHOD_POST, NULL, 0, "api/server/now?jwt=%s&" QUERY_COMPACT, jwt) < 0 ||
	    !is_success(answer.code) || !cbor_int(answer.body, answer.len, "now", &now)) {
		print_error("clock failed", answer.code, answer.body, answer.len);
		if (is_unauthorized(answer.code) && use_login()) {
			atomic_set(&need_login, 1);
		}
		return -1;
	}
	int64_t received = k_uptime_get();

	clock_offset_ms = now - (sent + received) / 2;
	clock_synced = true;
	printk("clock now=%lld rtt_ms=%lld\n", (long long)now, (long long)(received - sent));
	return 0;
}

static void report(void)
{
	/* Made-up values, as kiot_simulate() makes them for the other examples: read a sensor here. */
	uint32_t step = docs % 78, tri = step < 39 ? step : 77 - step;
	double temperature = 19.5 + 0.1 * tri + 0.05;
	uint32_t humidity = 40 + docs % 10;
	uint64_t uptime = (uint64_t)k_uptime_get() / 1000;
	uint64_t ts = (uint64_t)(k_uptime_get() + clock_offset_ms);
	static uint8_t body[64];
	size_t len = encode_reading(body, sizeof(body), temperature, humidity, uptime, ts);
	char id[48] = "-";

	last_report_ms = k_uptime_get();
	if (send_request(COAP_METHOD_POST, body, len,
			 "api/document/create?index=%s&collection=%s&jwt=%s&" QUERY_COMPACT,
			 CONFIG_KUZZLE_INDEX, CONFIG_KUZZLE_SENSORS, jwt) < 0 ||
	    !is_success(answer.code)) {
		print_error("report failed", answer.code, answer.body, answer.len);
		if (is_unauthorized(answer.code) && use_login()) {
			atomic_set(&need_login, 1);
		}
		return;
	}
	cbor_text(answer.body, answer.len, "_id", id, sizeof(id));
	docs++;
	int centi = (int)(temperature * 100 + 0.5);

	printk("report sent n=%u id=%s temperature=%d.%02d humidity=%u uptime=%llu ts=%llu period_ms=%u bytes=%u\n",
	       docs, id, centi / 100, centi % 100, humidity, (unsigned long long)uptime,
	       (unsigned long long)ts, (uint32_t)atomic_get(&period_ms), (unsigned)len);
}

/* --------------------------------------------------------------- network */

static void on_l4_event(struct net_mgmt_event_callback *cb, uint64_t event, struct net_if *iface)
{
	ARG_UNUSED(cb);
	ARG_UNUSED(iface);
	if (event == NET_EVENT_L4_CONNECTED) {
		printk("network up\n");
		atomic_set(&network_changed, 1);
		k_sem_give(&network_up);
	} else if (event == NET_EVENT_L4_DISCONNECTED) {
		printk("network down\n");
	}
}

int main(void)
{
	uint32_t login_backoff_ms = 500;

	coap_client_init(&client, NULL);
	net_mgmt_init_event_callback(&l4_callback, on_l4_event,
				     NET_EVENT_L4_CONNECTED | NET_EVENT_L4_DISCONNECTED);
	net_mgmt_add_event_callback(&l4_callback);
	conn_mgr_mon_resend_status();
	printk("start host=%s port=%d index=%s sensors=%s commands=%s period_ms=%u auth=%s\n",
	       CONFIG_KUZZLE_HOST, CONFIG_KUZZLE_COAP_PORT, CONFIG_KUZZLE_INDEX, CONFIG_KUZZLE_SENSORS,
	       CONFIG_KUZZLE_COMMANDS, CONFIG_KUZZLE_PERIOD_MS, use_login() ? "login" : "jwt");
	k_sem_take(&network_up, K_FOREVER);

	if (use_login()) {
		atomic_set(&need_login, 1);
	} else {
		strncpy(jwt, CONFIG_KUZZLE_JWT, sizeof(jwt) - 1);
	}
	for (;;) {
		if (atomic_cas(&network_changed, 1, 0)) {
			printk("network changed: new session, re-registering\n");
			if (open_socket() < 0) {
				k_sleep(K_SECONDS(5));
				atomic_set(&network_changed, 1);
				continue;
			}
			obs_retry_at = 0;
			obs_backoff_ms = 500;
			clock_synced = false;
		}
		if (atomic_get(&need_login)) {
			if (!use_login()) {
				printk("error auth reason=token_rejected (a jwt was given: nothing to log in with)\n");
				return 1;
			}
			if (login() < 0) {
				k_sleep(K_MSEC(login_backoff_ms));
				login_backoff_ms = login_backoff_ms >= 30000 ? 60000 : login_backoff_ms * 2;
				continue;
			}
			atomic_set(&need_login, 0);
			login_backoff_ms = 500;
		}
		if (!clock_synced) {
			if (sync_clock() < 0) {
				k_sleep(K_SECONDS(1));
			}
			continue;
		}
		if (atomic_cas(&obs_failed, 1, 0)) {
			schedule_registration();
		}
		int64_t now = k_uptime_get();

		if (atomic_get(&obs_state) == OBS_ACTIVE) {
			obs_backoff_ms = 500;
		}
		if (atomic_get(&obs_state) == OBS_IDLE && now >= obs_retry_at &&
		    !atomic_get(&obs_failed)) {
			register_observation();
		}
		uint32_t period = (uint32_t)atomic_get(&period_ms);

		if (next_report_ms > last_report_ms + period) {
			next_report_ms = last_report_ms + period; /* a command shortened the period */
		}
		if (now >= next_report_ms) {
			report();
			/* A fixed rate, unless it fell behind. */
			next_report_ms += (uint32_t)atomic_get(&period_ms);
			if (next_report_ms <= k_uptime_get()) {
				next_report_ms = k_uptime_get() + (uint32_t)atomic_get(&period_ms);
			}
			continue;
		}
		k_sleep(K_MSEC(MIN(next_report_ms - now, 100)));
	}
	return 0;
}
