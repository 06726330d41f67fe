/*
 * bench_dtls_client: a DTLS 1.2 PSK *client* for the bench's load generator
 * only (node-dtls-client, pure JS, tops out near 800 handshakes/s here).
 *
 * Same approach as the plugin's server engine (native/dtls.c): OpenSSL from
 * the node binary, one SSL per session over memory BIOs, no socket. The JS
 * side (lib/dtlsClient.js) owns the UDP socket and the retransmission timer;
 * it feeds each received datagram and sends what comes back. Output is split
 * into datagrams along the 13-byte record headers, at most `mtu` bytes each.
 * Called only by the bench with well-formed arguments: the checks here catch
 * mistakes, they are no defence against hostile input.
 */
#define NAPI_VERSION 8
#include <node_api.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#define REC_HEADER 13
#define MAX_IDENTITY 256
#define MAX_PSK 64
#define READ_CHUNK 16384

enum { ST_HANDSHAKING = 0, ST_ESTABLISHED = 1, ST_CLOSED = 2, ST_FAILED = 3 };

typedef struct Ctx {
  SSL_CTX *ssl_ctx;
  unsigned refs; /* the JS object and every session */
  long mtu;
} Ctx;

typedef struct Conn {
  SSL *ssl; /* NULL once freed */
  Ctx *ctx;
  int state;
  char identity[MAX_IDENTITY + 1];
  unsigned char psk[MAX_PSK];
  unsigned psk_len;
} Conn;

static void ctx_unref(Ctx *ctx) {
  if (ctx == NULL || --ctx->refs > 0) return;
  SSL_CTX_free(ctx->ssl_ctx);
  free(ctx);
}

static void conn_free_ssl(Conn *conn) {
  if (conn->ssl == NULL) return;
  SSL_free(conn->ssl);
  conn->ssl = NULL;
  OPENSSL_cleanse(conn->psk, sizeof conn->psk);
}

static void finalize_context(napi_env env, void *data, void *hint) { ctx_unref(data); }

static void finalize_session(napi_env env, void *data, void *hint) {
  Conn *conn = data;
  conn_free_ssl(conn);
  ctx_unref(conn->ctx);
  free(conn);
}

static napi_value fail(napi_env env, const char *message) {
  napi_throw_error(env, NULL, message);
  return NULL;
}

#define NAPI_OK(call) \
  do {                \
    if ((call) != napi_ok) return fail(env, "bench DTLS client: N-API call failed"); \
  } while (0)

static Conn *session_of(napi_env env, napi_value v) {
  Conn *conn = NULL;
  if (napi_unwrap(env, v, (void **)&conn) != napi_ok || conn == NULL) return fail(env, "expected a session"), NULL;
  if (conn->ssl == NULL) return fail(env, "session is freed"), NULL;
  return conn;
}

/* OpenSSL asks for the identity and key while it writes the ClientKeyExchange. */
static unsigned int psk_client_cb(SSL *ssl, const char *hint, char *identity, unsigned int max_identity_len,
                                  unsigned char *psk, unsigned int max_psk_len) {
  Conn *conn = SSL_get_app_data(ssl);
  size_t id_len = strlen(conn->identity);
  if (id_len + 1 > max_identity_len || conn->psk_len > max_psk_len) return 0;
  memcpy(identity, conn->identity, id_len + 1);
  memcpy(psk, conn->psk, conn->psk_len);
  return conn->psk_len;
}

/* What OpenSSL wrote, as datagrams of whole records up to the MTU; empties the write BIO. */
static napi_value drain(napi_env env, Conn *conn) {
  BIO *wbio = SSL_get_wbio(conn->ssl);
  char *p = NULL;
  long total = BIO_get_mem_data(wbio, &p);
  size_t n = total > 0 ? (size_t)total : 0, i = 0, start = 0, mtu = (size_t)conn->ctx->mtu;
  uint32_t count = 0;
  napi_value arr, buf;
  NAPI_OK(napi_create_array(env, &arr));
  while (i < n) {
    size_t rec = n - i;
    if (rec >= REC_HEADER) {
      size_t len = REC_HEADER + (((size_t)(uint8_t)p[i + 11] << 8) | (uint8_t)p[i + 12]);
      if (len < rec) rec = len;
    }
    if (i > start && i - start + rec > mtu) {
      NAPI_OK(napi_create_buffer_copy(env, i - start, p + start, NULL, &buf));
      NAPI_OK(napi_set_element(env, arr, count++, buf));
      start = i;
    }
    i += rec;
  }
  if (i > start) {
    NAPI_OK(napi_create_buffer_copy(env, i - start, p + start, NULL, &buf));
    NAPI_OK(napi_set_element(env, arr, count, buf));
  }
  (void)BIO_reset(wbio);
  return arr;
}

/* SSL_free_buffers (compact) may have run: SSL_write crashes without buffers. */
static bool op_begin(napi_env env, Conn *conn) {
  ERR_clear_error();
  if (!SSL_alloc_buffers(conn->ssl)) return fail(env, "out of memory for record buffers"), false;
  return true;
}

static void settle(Conn *conn, int r) {
  switch (SSL_get_error(conn->ssl, r)) {
    case SSL_ERROR_NONE:
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
      return;
    case SSL_ERROR_ZERO_RETURN:
      conn->state = ST_CLOSED;
      return;
    default:
      conn->state = ST_FAILED;
  }
}

/* createContext({ ciphers, mtu }) -> Context */
static napi_value js_create_context(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], v, obj;
  char ciphers[1024];
  size_t len = 0;
  int32_t mtu = 0;
  Ctx *ctx;
  NAPI_OK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1) return fail(env, "createContext(options)");
  if (napi_get_named_property(env, argv[0], "ciphers", &v) != napi_ok ||
      napi_get_value_string_utf8(env, v, ciphers, sizeof ciphers, &len) != napi_ok || len == 0)
    return fail(env, "options.ciphers must be a string");
  if (napi_get_named_property(env, argv[0], "mtu", &v) != napi_ok || napi_get_value_int32(env, v, &mtu) != napi_ok ||
      mtu < 256)
    return fail(env, "options.mtu must be an integer >= 256");
  ctx = calloc(1, sizeof *ctx);
  if (ctx == NULL || (ctx->ssl_ctx = SSL_CTX_new(DTLS_client_method())) == NULL) {
    free(ctx);
    return fail(env, "SSL_CTX_new failed");
  }
  ctx->refs = 1;
  ctx->mtu = mtu;
  SSL_CTX_set_min_proto_version(ctx->ssl_ctx, DTLS1_2_VERSION);
  SSL_CTX_set_max_proto_version(ctx->ssl_ctx, DTLS1_2_VERSION);
  /* A memory BIO cannot tell the MTU: SSL_set_mtu does. No tickets: every handshake is a full one. */
  SSL_CTX_set_options(ctx->ssl_ctx, SSL_OP_NO_QUERY_MTU | SSL_OP_NO_TICKET);
  SSL_CTX_set_session_cache_mode(ctx->ssl_ctx, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_psk_client_callback(ctx->ssl_ctx, psk_client_cb);
  if (!SSL_CTX_set_cipher_list(ctx->ssl_ctx, ciphers)) {
    ctx_unref(ctx);
    ERR_clear_error();
    return fail(env, "no usable cipher in options.ciphers");
  }
  if (napi_create_object(env, &obj) != napi_ok || napi_wrap(env, obj, ctx, finalize_context, NULL, NULL) != napi_ok) {
    ctx_unref(ctx);
    return fail(env, "createContext: N-API call failed");
  }
  return obj;
}

/* connect(ctx, identity: string, psk: Buffer) -> { session, datagrams }: the first ClientHello. */
static napi_value js_connect(napi_env env, napi_callback_info info) {
  size_t argc = 3, len = 0;
  napi_value argv[3], obj, res, datagrams;
  Ctx *ctx = NULL;
  Conn *conn;
  void *key = NULL;
  size_t key_len = 0;
  BIO *rbio, *wbio;
  int r;
  NAPI_OK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 3 || napi_unwrap(env, argv[0], (void **)&ctx) != napi_ok || ctx == NULL) return fail(env, "connect(ctx, identity, psk)");
  conn = calloc(1, sizeof *conn);
  if (conn == NULL) return fail(env, "out of memory");
  if (napi_get_value_string_utf8(env, argv[1], conn->identity, sizeof conn->identity, &len) != napi_ok || len == 0 ||
      len == MAX_IDENTITY || napi_get_buffer_info(env, argv[2], &key, &key_len) != napi_ok || key_len == 0 ||
      key_len > MAX_PSK) {
    free(conn);
    return fail(env, "identity: 1..255-byte string, psk: 1..64-byte Buffer");
  }
  memcpy(conn->psk, key, key_len);
  conn->psk_len = (unsigned)key_len;
  conn->ctx = ctx;
  ctx->refs++;
  conn->ssl = SSL_new(ctx->ssl_ctx);
  rbio = BIO_new(BIO_s_mem());
  wbio = BIO_new(BIO_s_mem());
  if (conn->ssl == NULL || rbio == NULL || wbio == NULL) {
    BIO_free(rbio);
    BIO_free(wbio);
    finalize_session(env, conn, NULL);
    return fail(env, "SSL_new failed");
  }
  /* An empty read BIO means "no datagram yet", not EOF. */
  BIO_set_mem_eof_return(rbio, -1);
  BIO_set_mem_eof_return(wbio, -1);
  SSL_set_bio(conn->ssl, rbio, wbio);
  SSL_set_mtu(conn->ssl, ctx->mtu);
  SSL_set_app_data(conn->ssl, conn);
  SSL_set_connect_state(conn->ssl);
  if (napi_create_object(env, &obj) != napi_ok || napi_wrap(env, obj, conn, finalize_session, NULL, NULL) != napi_ok) {
    finalize_session(env, conn, NULL);
    return fail(env, "connect: N-API call failed");
  }
  ERR_clear_error();
  r = SSL_do_handshake(conn->ssl);
  if (r <= 0) settle(conn, r);
  if ((datagrams = drain(env, conn)) == NULL) return NULL;
  NAPI_OK(napi_create_object(env, &res));
  NAPI_OK(napi_set_named_property(env, res, "session", obj));
  NAPI_OK(napi_set_named_property(env, res, "datagrams", datagrams));
  return res;
}

/* feed(session, datagram) -> { datagrams, data, state } */
static napi_value js_feed(napi_env env, napi_callback_info info) {
  size_t argc = 2, len = 0;
  napi_value argv[2], res, datagrams, data, buf, state;
  Conn *conn;
  void *in = NULL;
  uint32_t count = 0;
  unsigned char plain[READ_CHUNK];
  NAPI_OK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if ((conn = session_of(env, argv[0])) == NULL) return NULL;
  if (napi_get_buffer_info(env, argv[1], &in, &len) != napi_ok) return fail(env, "datagram must be a Buffer");
  NAPI_OK(napi_create_array(env, &data));
  if (conn->state < ST_CLOSED && len > 0 && op_begin(env, conn)) {
    BIO_write(SSL_get_rbio(conn->ssl), in, (int)len);
    if (!SSL_is_init_finished(conn->ssl)) {
      int r = SSL_do_handshake(conn->ssl);
      if (r <= 0) settle(conn, r);
    }
    if (conn->state == ST_HANDSHAKING && SSL_is_init_finished(conn->ssl)) conn->state = ST_ESTABLISHED;
    while (conn->state == ST_ESTABLISHED) {
      int n = SSL_read(conn->ssl, plain, sizeof plain);
      if (n <= 0) {
        settle(conn, n);
        break;
      }
      NAPI_OK(napi_create_buffer_copy(env, (size_t)n, plain, NULL, &buf));
      NAPI_OK(napi_set_element(env, data, count++, buf));
    }
    (void)BIO_reset(SSL_get_rbio(conn->ssl)); /* nothing carries over to the next datagram */
    ERR_clear_error();
  }
  if ((datagrams = drain(env, conn)) == NULL) return NULL;
  NAPI_OK(napi_create_object(env, &res));
  NAPI_OK(napi_create_int32(env, conn->state, &state));
  NAPI_OK(napi_set_named_property(env, res, "datagrams", datagrams));
  NAPI_OK(napi_set_named_property(env, res, "data", data));
  NAPI_OK(napi_set_named_property(env, res, "state", state));
  return res;
}

/* write(session, plaintext) -> Buffer: one record in one datagram (CoAP messages fit the data MTU). */
static napi_value js_write(napi_env env, napi_callback_info info) {
  size_t argc = 2, len = 0;
  napi_value argv[2], out;
  Conn *conn;
  void *data = NULL;
  char *p = NULL;
  long n;
  NAPI_OK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if ((conn = session_of(env, argv[0])) == NULL) return NULL;
  if (napi_get_buffer_info(env, argv[1], &data, &len) != napi_ok || len == 0) return fail(env, "plaintext must be a non-empty Buffer");
  if (conn->state != ST_ESTABLISHED) return fail(env, "session is not established");
  if (!op_begin(env, conn)) return NULL;
  if (SSL_write(conn->ssl, data, (int)len) <= 0) {
    ERR_clear_error();
    return fail(env, "SSL_write failed");
  }
  n = BIO_get_mem_data(SSL_get_wbio(conn->ssl), &p);
  NAPI_OK(napi_create_buffer_copy(env, n > 0 ? (size_t)n : 0, p, NULL, &out));
  (void)BIO_reset(SSL_get_wbio(conn->ssl));
  return out;
}

/* timeout(session) -> ms until handleTimeout is due, -1 without a timer. */
static napi_value js_timeout(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], out;
  Conn *conn;
  struct timeval tv = {0, 0};
  double ms = -1;
  NAPI_OK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if ((conn = session_of(env, argv[0])) == NULL) return NULL;
  if (conn->state == ST_HANDSHAKING && DTLSv1_get_timeout(conn->ssl, &tv) == 1)
    ms = (double)tv.tv_sec * 1000 + (double)tv.tv_usec / 1000;
  NAPI_OK(napi_create_double(env, ms, &out));
  return out;
}

/* handleTimeout(session) -> Buffer[]: the retransmitted flight. */
static napi_value js_handle_timeout(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  Conn *conn;
  NAPI_OK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if ((conn = session_of(env, argv[0])) == NULL) return NULL;
  if (conn->state == ST_HANDSHAKING && op_begin(env, conn) && DTLSv1_handle_timeout(conn->ssl) < 0) conn->state = ST_FAILED;
  ERR_clear_error();
  return drain(env, conn);
}

/* shutdown(session) -> Buffer[]: close_notify. */
static napi_value js_shutdown(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  Conn *conn;
  NAPI_OK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if ((conn = session_of(env, argv[0])) == NULL) return NULL;
  if (conn->state == ST_ESTABLISHED && op_begin(env, conn)) {
    (void)SSL_shutdown(conn->ssl);
    conn->state = ST_CLOSED;
  }
  ERR_clear_error();
  return drain(env, conn);
}

/* compact(session): releases the record buffers of an idle session (the next operation takes them back). */
static napi_value js_compact(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  Conn *conn;
  NAPI_OK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if ((conn = session_of(env, argv[0])) == NULL) return NULL;
  SSL_free_buffers(conn->ssl);
  return NULL;
}

/* free(session): the SSL now, idempotent; the small Conn at finalization. */
static napi_value js_free(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  Conn *conn = NULL;
  NAPI_OK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (napi_unwrap(env, argv[0], (void **)&conn) != napi_ok || conn == NULL) return fail(env, "expected a session");
  conn_free_ssl(conn);
  return NULL;
}

static napi_value init(napi_env env, napi_value exports) {
  const napi_property_descriptor props[] = {
      {"createContext", NULL, js_create_context, NULL, NULL, NULL, napi_enumerable, NULL},
      {"connect", NULL, js_connect, NULL, NULL, NULL, napi_enumerable, NULL},
      {"feed", NULL, js_feed, NULL, NULL, NULL, napi_enumerable, NULL},
      {"write", NULL, js_write, NULL, NULL, NULL, napi_enumerable, NULL},
      {"timeout", NULL, js_timeout, NULL, NULL, NULL, napi_enumerable, NULL},
      {"handleTimeout", NULL, js_handle_timeout, NULL, NULL, NULL, napi_enumerable, NULL},
      {"shutdown", NULL, js_shutdown, NULL, NULL, NULL, napi_enumerable, NULL},
      {"compact", NULL, js_compact, NULL, NULL, NULL, napi_enumerable, NULL},
      {"free", NULL, js_free, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  if (napi_define_properties(env, exports, sizeof props / sizeof props[0], props) != napi_ok) return NULL;
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
