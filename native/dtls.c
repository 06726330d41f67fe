/*
 * kuzzle_coap_dtls: the DTLS 1.2 *server* engine of the coaps listener.
 *
 * This file owns the OpenSSL side of coaps and nothing else: contexts
 * (SSL_CTX: ciphers, PSK callback, certificates, client verification,
 * cookie secrets), the stateless cookie listener (DTLSv1_listen), and one
 * SSL per peer over memory BIOs. The JavaScript side owns the UDP socket,
 * the peer table, the timers and the deadlines; it hands datagrams in and
 * sends back the datagrams returned here.
 *
 * It links nothing: every SSL symbol resolves from the node binary itself
 * (Node's bundled OpenSSL 3.0), so it must be built with that Node's headers.
 *
 * Rules kept throughout (each one measured, see the project notes on DTLS):
 * - a memory BIO is a byte stream, so all output is split back into
 *   datagrams along the 13-byte record headers, at most `mtu` bytes each;
 * - SSL_OP_NO_QUERY_MTU + SSL_set_mtu, or OpenSSL falls to a 227-byte data MTU;
 * - record buffers are released after every operation on a session
 *   (SSL_free_buffers) and re-allocated before the next one (SSL_write
 *   crashes without SSL_alloc_buffers);
 * - no input may crash the process: wrong types throw TypeError, a freed
 *   session throws, a failed session keeps answering with state 3;
 * - no forged datagram may kill a session: OpenSSL 3.0 answers an encrypted
 *   record shorter than its AEAD nonce + tag with a fatal internal_error
 *   alert (openssl/openssl#25389) instead of discarding it as RFC 6347
 *   4.1.2.7 asks, so such records are dropped here before OpenSSL sees them;
 * - no global mutable state: the PSK lookup function and its napi_env live
 *   in the Conn being operated on, for the duration of that one call.
 */
#define NAPI_VERSION 8
#include <node_api.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#if OPENSSL_VERSION_NUMBER < 0x30000000L
#error "build with the OpenSSL 3 headers of the Node.js that loads this addon"
#endif

#define REC_HEADER 13          /* DTLS record header: type, version, epoch, seq, length */
#define MIN_MTU 256            /* OpenSSL refuses smaller (dtls1_min_mtu) */
#define MAX_MTU 65507          /* largest UDP payload over IPv4 */
#define MAX_DATAGRAM 65535     /* anything larger cannot have come from a UDP socket */
#define MAX_PEER_KEY 256
#define MAX_IDENTITY 256       /* RFC 4279 allows 2^16-1; OpenSSL and the notes stop at 256 */
#define MAX_PSK 64
#define MIN_SECRET 16
#define MAX_SECRET 1024
#define MAX_CIPHER_LIST 4096
#define READ_CHUNK 16384       /* SSL3_RT_MAX_PLAIN_LENGTH: one record's plaintext */
#define MAX_RECORDS_PER_DATAGRAM (MAX_DATAGRAM / 13) /* empty ones included: 13-byte headers at least */
#define SESSION_COST 36000     /* malloc'd bytes of an idle session (measured): told to V8 so
                                  that sessions dropped without free() still press the GC */

enum { ST_HANDSHAKING = 0, ST_ESTABLISHED = 1, ST_CLOSED = 2, ST_FAILED = 3 };

/* One createContext(). Reference-counted: the JS object holds one reference and
 * every SSL made from it another, because a session still verifies its cookie
 * (second check, inside SSL_accept) after the JS Context may be gone. */
typedef struct Ctx {
  SSL_CTX *ssl_ctx;
  unsigned refs;
  size_t mtu;
  unsigned char *secret[2]; /* [0] current, [1] previous (rotation) */
  size_t secret_len[2];
} Ctx;

/* One SSL with its two memory BIOs: the listener's, then (after the cookie
 * round) a peer's session. It is the SSL's app data, so the OpenSSL callbacks
 * find the peer key and the current call's lookup function through it. */
typedef struct Conn {
  SSL *ssl;            /* NULL once freed */
  Ctx *ctx;
  char *peer;          /* "address:port": the cookie input (a memory BIO has no peer address) */
  size_t peer_len;
  int state;
  bool busy;           /* an operation runs: refuse re-entry from inside pskLookup */
  bool shut;           /* our close_notify has been sent */
  bool accounted;      /* SESSION_COST is reported to V8 (napi_adjust_external_memory) */
  const char *error;   /* OpenSSL's reason string (static storage) once failed */
  napi_env cb_env;     /* valid only while an operation runs */
  napi_value cb_fn;
} Conn;

typedef struct Listener {
  Conn *conn;          /* the SSL fed to DTLSv1_listen; replaced when it becomes a session */
} Listener;

/* Type tags: a Context passed where a Session is expected must throw, not crash. */
static const napi_type_tag TAG_CONTEXT = {0x6b757a7a6c65636fULL, 0x6170647463747831ULL};
static const napi_type_tag TAG_LISTENER = {0x6b757a7a6c65636fULL, 0x617064746c736e32ULL};
static const napi_type_tag TAG_SESSION = {0x6b757a7a6c65636fULL, 0x6170647473657333ULL};

/* ------------------------------------------------------------------------ */
/* Errors                                                                    */
/* ------------------------------------------------------------------------ */

/* Empties OpenSSL's error queue; returns the first (root cause) reason. */
static const char *take_error(void) {
  const char *first = NULL;
  unsigned long e;
  while ((e = ERR_get_error()) != 0) {
    const char *reason = ERR_reason_error_string(e);
    if (first == NULL && reason != NULL) first = reason;
  }
  return first;
}

/* Throws "<before><arg><after>". */
static void throw_msg(napi_env env, bool type_error, const char *code, const char *before, const char *arg,
                      const char *after) {
  char msg[512];
  snprintf(msg, sizeof msg, "%s%s%s", before, arg, after);
  if (type_error) napi_throw_type_error(env, code, msg);
  else napi_throw_error(env, code, msg);
}

/* Throws an Error carrying OpenSSL's reason. */
static void throw_ssl(napi_env env, const char *what) {
  const char *reason = take_error();
  char msg[600];
  snprintf(msg, sizeof msg, "%s: %s", what, reason ? reason : "unknown OpenSSL error");
  napi_throw_error(env, "ERR_DTLS_OPENSSL", msg);
}

/* After a failed N-API call: make sure the JS caller sees an exception. */
static void throw_napi(napi_env env) {
  bool pending = false;
  const napi_extended_error_info *info = NULL;
  napi_is_exception_pending(env, &pending);
  if (pending) return;
  napi_get_last_error_info(env, &info);
  napi_throw_error(env, NULL, info && info->error_message ? info->error_message : "N-API call failed");
}

#define NAPI_OK(call)        \
  do {                       \
    if ((call) != napi_ok) { \
      throw_napi(env);       \
      return NULL;           \
    }                        \
  } while (0)

/* ------------------------------------------------------------------------ */
/* Arguments                                                                 */
/* ------------------------------------------------------------------------ */

static bool get_args(napi_env env, napi_callback_info info, size_t n, napi_value *argv) {
  size_t argc = n; /* missing arguments come back as undefined */
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) {
    throw_napi(env);
    return false;
  }
  return true;
}

static bool is_nullish(napi_env env, napi_value v) {
  napi_valuetype t;
  return napi_typeof(env, v, &t) == napi_ok && (t == napi_undefined || t == napi_null);
}

static void *unwrap(napi_env env, napi_value v, const napi_type_tag *tag, const char *what) {
  napi_valuetype t;
  bool tagged = false;
  void *p = NULL;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_object ||
      napi_check_object_type_tag(env, v, tag, &tagged) != napi_ok || !tagged ||
      napi_unwrap(env, v, &p) != napi_ok || p == NULL) {
    throw_msg(env, true, "ERR_INVALID_ARG_TYPE", "expected a DTLS ", what, "");
    return NULL;
  }
  return p;
}

static bool get_buffer(napi_env env, napi_value v, const char *name, const uint8_t **data, size_t *len) {
  bool is_buf = false;
  void *p = NULL;
  if (napi_is_buffer(env, v, &is_buf) != napi_ok || !is_buf ||
      napi_get_buffer_info(env, v, &p, len) != napi_ok) {
    throw_msg(env, true, "ERR_INVALID_ARG_TYPE", "", name, " must be a Buffer");
    return false;
  }
  *data = p;
  return true;
}

/* pskLookup: a function, or null/undefined (then every identity is unknown). */
static bool get_lookup(napi_env env, napi_value v, napi_value *fn) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok) {
    throw_napi(env);
    return false;
  }
  if (t == napi_function) {
    *fn = v;
    return true;
  }
  if (t == napi_undefined || t == napi_null) {
    *fn = NULL;
    return true;
  }
  napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "pskLookup must be a function");
  return false;
}

/* ------------------------------------------------------------------------ */
/* Context and connection lifetime                                           */
/* ------------------------------------------------------------------------ */

static void secret_set(Ctx *ctx, int i, const uint8_t *data, size_t len) {
  if (ctx->secret[i] != NULL) {
    OPENSSL_cleanse(ctx->secret[i], ctx->secret_len[i]);
    free(ctx->secret[i]);
  }
  ctx->secret[i] = NULL;
  ctx->secret_len[i] = 0;
  if (data != NULL && len > 0 && (ctx->secret[i] = malloc(len)) != NULL) {
    memcpy(ctx->secret[i], data, len);
    ctx->secret_len[i] = len;
  }
}

static void ctx_unref(Ctx *ctx) {
  if (ctx == NULL || --ctx->refs > 0) return;
  SSL_CTX_free(ctx->ssl_ctx);
  secret_set(ctx, 0, NULL, 0);
  secret_set(ctx, 1, NULL, 0);
  free(ctx);
}

static void conn_free_ssl(napi_env env, Conn *conn) {
  if (conn->ssl != NULL) {
    SSL_free(conn->ssl); /* also frees both BIOs */
    conn->ssl = NULL;
  }
  if (conn->accounted) {
    int64_t ignored;
    conn->accounted = false;
    napi_adjust_external_memory(env, -SESSION_COST, &ignored);
  }
}

static void conn_destroy(napi_env env, Conn *conn) {
  if (conn == NULL) return;
  conn_free_ssl(env, conn);
  free(conn->peer);
  ctx_unref(conn->ctx);
  free(conn);
}

static Conn *conn_new(Ctx *ctx) {
  Conn *conn = calloc(1, sizeof *conn);
  SSL *ssl = NULL;
  BIO *rbio = NULL, *wbio = NULL;
  if (conn == NULL) return NULL;
  ssl = SSL_new(ctx->ssl_ctx);
  rbio = BIO_new(BIO_s_mem());
  wbio = BIO_new(BIO_s_mem());
  if (ssl == NULL || rbio == NULL || wbio == NULL) goto fail;
  /* An empty read BIO must mean "no datagram yet" (WANT_READ), not EOF. */
  BIO_set_mem_eof_return(rbio, -1);
  BIO_set_mem_eof_return(wbio, -1);
  SSL_set_bio(ssl, rbio, wbio); /* the SSL owns them from here */
  rbio = wbio = NULL;
  /* With SSL_OP_NO_QUERY_MTU (set on the SSL_CTX) this MTU survives SSL_clear. */
  if (SSL_set_mtu(ssl, (long)ctx->mtu) <= 0) goto fail;
  SSL_set_accept_state(ssl);
  SSL_set_app_data(ssl, conn);
  conn->ssl = ssl;
  conn->ctx = ctx;
  conn->state = ST_HANDSHAKING;
  ctx->refs++;
  return conn;
fail:
  SSL_free(ssl);
  BIO_free(rbio);
  BIO_free(wbio);
  free(conn);
  return NULL;
}

static void finalize_context(napi_env env, void *data, void *hint) { ctx_unref(data); }

static void finalize_listener(napi_env env, void *data, void *hint) {
  Listener *l = data;
  conn_destroy(env, l->conn);
  free(l);
}

static void finalize_session(napi_env env, void *data, void *hint) { conn_destroy(env, data); }

/* Wraps native data in a fresh, type-tagged JS object. On failure the
 * finalizer is NOT registered: the caller still owns `data`. */
static napi_value wrap_new(napi_env env, void *data, const napi_type_tag *tag, napi_finalize fin) {
  napi_value obj;
  if (napi_create_object(env, &obj) != napi_ok || napi_wrap(env, obj, data, fin, NULL, NULL) != napi_ok) {
    throw_napi(env);
    return NULL;
  }
  if (napi_type_tag_object(env, obj, tag) != napi_ok) {
    void *back;
    napi_remove_wrap(env, obj, &back); /* hand ownership back to the caller */
    throw_napi(env);
    return NULL;
  }
  return obj;
}

/* ------------------------------------------------------------------------ */
/* OpenSSL callbacks                                                         */
/* ------------------------------------------------------------------------ */

static int cookie_hmac(const Conn *conn, int which, unsigned char *out, unsigned int *out_len) {
  const Ctx *ctx = conn->ctx;
  if (ctx->secret[which] == NULL || conn->peer == NULL) return 0;
  return HMAC(EVP_sha256(), ctx->secret[which], (int)ctx->secret_len[which], (const unsigned char *)conn->peer,
              conn->peer_len, out, out_len) != NULL;
}

/* Cookie = HMAC-SHA256(current secret, "address:port"): stateless, bound to the peer. */
static int cookie_generate(SSL *ssl, unsigned char *cookie, unsigned int *cookie_len) {
  const Conn *conn = SSL_get_app_data(ssl);
  return conn != NULL && cookie_hmac(conn, 0, cookie, cookie_len);
}

/* Accepts the current or the previous secret: a cookie is checked twice
 * (DTLSv1_listen, then SSL_accept) and a rotation may fall in between. */
static int cookie_verify(SSL *ssl, const unsigned char *cookie, unsigned int cookie_len) {
  const Conn *conn = SSL_get_app_data(ssl);
  unsigned char expected[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (conn == NULL) return 0;
  for (int i = 0; i < 2; i++) {
    if (cookie_hmac(conn, i, expected, &n) && n == cookie_len && CRYPTO_memcmp(expected, cookie, n) == 0) return 1;
  }
  return 0;
}

/* Calls the JS pskLookup of the running operation, synchronously. Any answer
 * other than a 1..64-byte Buffer means "unknown identity": returning 0 makes
 * OpenSSL send its fatal alert. */
static unsigned int psk_server_cb(SSL *ssl, const char *identity, unsigned char *psk, unsigned int max_psk_len) {
  Conn *conn = SSL_get_app_data(ssl);
  napi_env env;
  napi_handle_scope scope;
  napi_value id_buf, recv, result;
  unsigned int out = 0;
  size_t id_len;
  if (conn == NULL || conn->cb_env == NULL || conn->cb_fn == NULL || identity == NULL) return 0;
  id_len = strnlen(identity, MAX_IDENTITY + 1);
  if (id_len > MAX_IDENTITY) return 0;
  env = conn->cb_env;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return 0;
  if (napi_create_buffer_copy(env, id_len, identity, NULL, &id_buf) == napi_ok &&
      napi_get_undefined(env, &recv) == napi_ok &&
      napi_call_function(env, recv, conn->cb_fn, 1, &id_buf, &result) == napi_ok) {
    bool is_buf = false;
    void *key = NULL;
    size_t key_len = 0;
    if (napi_is_buffer(env, result, &is_buf) == napi_ok && is_buf &&
        napi_get_buffer_info(env, result, &key, &key_len) == napi_ok && key_len >= 1 && key_len <= MAX_PSK &&
        key_len <= max_psk_len) {
      memcpy(psk, key, key_len);
      out = (unsigned int)key_len;
    }
  }
  {
    /* A throwing lookup is an unknown identity, not an exception in listen/feed. */
    bool pending = false;
    napi_value ignored;
    if (napi_is_exception_pending(env, &pending) == napi_ok && pending) napi_get_and_clear_last_exception(env, &ignored);
  }
  napi_close_handle_scope(env, scope);
  return out;
}

/* PEM pass phrases are not supported: without this callback OpenSSL would
 * prompt on the terminal and block the process. */
static int no_passphrase(char *buf, int size, int rwflag, void *u) { return 0; }

/* ------------------------------------------------------------------------ */
/* Operations                                                                */
/* ------------------------------------------------------------------------ */

/* Splits what OpenSSL wrote into datagrams along the record headers
 * (length = bytes 11..12), packing whole consecutive records up to `mtu`
 * bytes; then empties the write BIO. Returns NULL (exception pending) only
 * if N-API fails. */
static napi_value drain(napi_env env, Conn *conn) {
  BIO *wbio = SSL_get_wbio(conn->ssl);
  char *p = NULL;
  long total = BIO_get_mem_data(wbio, &p);
  size_t n = total > 0 ? (size_t)total : 0, i = 0, start = 0, mtu = conn->ctx->mtu;
  uint32_t count = 0;
  napi_value arr, buf;
  bool ok = napi_create_array(env, &arr) == napi_ok;
  while (ok && i < n) {
    size_t rec = n - i;
    if (rec >= REC_HEADER) {
      size_t len = REC_HEADER + (((size_t)(uint8_t)p[i + 11] << 8) | (uint8_t)p[i + 12]);
      if (len < rec) rec = len;
    }
    if (i > start && i - start + rec > mtu) {
      ok = napi_create_buffer_copy(env, i - start, p + start, NULL, &buf) == napi_ok &&
           napi_set_element(env, arr, count++, buf) == napi_ok;
      start = i;
    }
    i += rec;
  }
  if (ok && i > start)
    ok = napi_create_buffer_copy(env, i - start, p + start, NULL, &buf) == napi_ok &&
         napi_set_element(env, arr, count, buf) == napi_ok;
  (void)BIO_reset(wbio);
  if (!ok) {
    throw_napi(env);
    return NULL;
  }
  return arr;
}

static napi_value empty_array(napi_env env) {
  napi_value arr;
  return napi_create_array(env, &arr) == napi_ok ? arr : NULL;
}

/* Every session operation runs between op_begin and op_end. */
static bool op_begin(napi_env env, Conn *conn, napi_value fn, bool alloc) {
  ERR_clear_error();
  /* Buffers were released after the previous operation; SSL_write and the
   * handshake need them back first. */
  if (alloc && !SSL_alloc_buffers(conn->ssl)) {
    napi_throw_error(env, "ERR_DTLS_NO_MEMORY", "out of memory for DTLS record buffers");
    return false;
  }
  conn->busy = true;
  conn->cb_env = env;
  conn->cb_fn = fn;
  return true;
}

static void op_end(Conn *conn, bool release) {
  /* A datagram is never carried over into the next operation. */
  (void)BIO_reset(SSL_get_rbio(conn->ssl));
  (void)BIO_reset(SSL_get_wbio(conn->ssl));
  /* Idle memory per session: ~36 KB with this, ~70 KB without. */
  if (release) SSL_free_buffers(conn->ssl);
  ERR_clear_error();
  conn->cb_env = NULL;
  conn->cb_fn = NULL;
  conn->busy = false;
}

/* Classifies the outcome of a handshake/read call that returned r. */
static void settle(Conn *conn, int r, const char *fallback) {
  int e = SSL_get_error(conn->ssl, r);
  switch (e) {
    case SSL_ERROR_NONE:
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
      return;
    case SSL_ERROR_ZERO_RETURN: /* the peer's close_notify */
      conn->state = ST_CLOSED;
      ERR_clear_error();
      return;
    default: {
      const char *reason = take_error();
      conn->state = ST_FAILED;
      conn->error = reason ? reason : fallback;
      return;
    }
  }
}

/* Checks a session argument: tagged, not freed, not inside its own callback. */
static Conn *get_session(napi_env env, napi_value v) {
  Conn *conn = unwrap(env, v, &TAG_SESSION, "session");
  if (conn == NULL) return NULL;
  if (conn->ssl == NULL) {
    napi_throw_error(env, "ERR_DTLS_FREED", "session is freed");
    return NULL;
  }
  if (conn->busy) {
    napi_throw_error(env, "ERR_DTLS_BUSY", "session is busy (called from inside its own pskLookup)");
    return NULL;
  }
  return conn;
}

/* ------------------------------------------------------------------------ */
/* Exported functions                                                        */
/* ------------------------------------------------------------------------ */

static napi_value js_openssl_version(napi_env env, napi_callback_info info) {
  napi_value s;
  NAPI_OK(napi_create_string_utf8(env, OpenSSL_version(OPENSSL_VERSION), NAPI_AUTO_LENGTH, &s));
  return s;
}

/* Reads options[name]: a Buffer, or absent (data = NULL). */
static bool opt_buffer(napi_env env, napi_value opts, const char *name, const uint8_t **data, size_t *len) {
  napi_value v;
  char what[64];
  *data = NULL;
  *len = 0;
  if (napi_get_named_property(env, opts, name, &v) != napi_ok) {
    throw_napi(env);
    return false;
  }
  if (is_nullish(env, v)) return true;
  snprintf(what, sizeof what, "options.%s", name);
  return get_buffer(env, v, what, data, len);
}

/* Loads a PEM chain (server certificate first) and its key. */
static bool load_certificate(napi_env env, SSL_CTX *c, const uint8_t *cert, size_t cert_len, const uint8_t *key,
                             size_t key_len) {
  BIO *b = BIO_new_mem_buf(cert, (int)cert_len);
  X509 *x = b ? PEM_read_bio_X509(b, NULL, no_passphrase, NULL) : NULL;
  EVP_PKEY *pkey = NULL;
  bool ok = false;
  if (x == NULL || !SSL_CTX_use_certificate(c, x)) {
    throw_ssl(env, "createContext: options.certificate");
    goto done;
  }
  X509_free(x);
  while ((x = PEM_read_bio_X509(b, NULL, no_passphrase, NULL)) != NULL) {
    if (!SSL_CTX_add0_chain_cert(c, x)) { /* add0: the SSL_CTX owns x on success */
      X509_free(x);
      x = NULL;
      throw_ssl(env, "createContext: options.certificate (chain)");
      goto done;
    }
  }
  ERR_clear_error(); /* the loop ends on "no start line" */
  BIO_free(b);
  b = BIO_new_mem_buf(key, (int)key_len);
  pkey = b ? PEM_read_bio_PrivateKey(b, NULL, no_passphrase, NULL) : NULL;
  if (pkey == NULL || !SSL_CTX_use_PrivateKey(c, pkey) || !SSL_CTX_check_private_key(c)) {
    throw_ssl(env, "createContext: options.privateKey");
    goto done;
  }
  ok = true;
done:
  EVP_PKEY_free(pkey);
  BIO_free(b);
  return ok;
}

/* Trusts every certificate of a PEM bundle for client verification and
 * names them in the CertificateRequest. */
static bool load_ca(napi_env env, SSL_CTX *c, const uint8_t *ca, size_t ca_len) {
  BIO *b = BIO_new_mem_buf(ca, (int)ca_len);
  X509_STORE *store = SSL_CTX_get_cert_store(c);
  X509 *x;
  int count = 0;
  bool ok = true;
  while (b != NULL && (x = PEM_read_bio_X509(b, NULL, no_passphrase, NULL)) != NULL) {
    if (!X509_STORE_add_cert(store, x) || !SSL_CTX_add_client_CA(c, x)) ok = false;
    X509_free(x);
    if (!ok) break;
    count++;
  }
  if (!ok || count == 0) {
    throw_ssl(env, "createContext: options.ca");
    BIO_free(b);
    return false;
  }
  ERR_clear_error();
  BIO_free(b);
  return true;
}

/* true if at least one cipher of the list can be negotiated with what this
 * context has: PSK suites need psk, ECDSA/RSA suites a key of that type. */
static bool any_cipher_usable(SSL_CTX *c, bool psk) {
  STACK_OF(SSL_CIPHER) *list = SSL_CTX_get_ciphers(c);
  EVP_PKEY *pkey = SSL_CTX_get0_privatekey(c);
  int key_type = pkey ? EVP_PKEY_get_base_id(pkey) : NID_undef;
  for (int i = 0; i < sk_SSL_CIPHER_num(list); i++) {
    const SSL_CIPHER *cipher = sk_SSL_CIPHER_value(list, i);
    int auth = SSL_CIPHER_get_auth_nid(cipher), kx = SSL_CIPHER_get_kx_nid(cipher);
    bool needs_psk = kx == NID_kx_psk || kx == NID_kx_ecdhe_psk || kx == NID_kx_dhe_psk || kx == NID_kx_rsa_psk;
    if (needs_psk && !psk) continue;
    if (auth == NID_auth_psk && psk) return true;
    if (auth == NID_auth_ecdsa && key_type == EVP_PKEY_EC) return true;
    if (auth == NID_auth_rsa && key_type == EVP_PKEY_RSA) return true;
  }
  return false;
}

/* createContext(options) -> Context: one SSL_CTX, DTLS 1.2 only. */
static napi_value js_create_context(napi_env env, napi_callback_info info) {
  napi_value argv[1], v, result = NULL;
  napi_valuetype t;
  char ciphers[MAX_CIPHER_LIST + 1], verify[16] = "none";
  size_t len = 0;
  bool psk = false;
  double mtu_d = 0;
  int verify_mode = SSL_VERIFY_NONE;
  const uint8_t *cert, *key, *ca;
  size_t cert_len, key_len, ca_len;
  unsigned char secret[32];
  Ctx *ctx = NULL;
  SSL_CTX *c = NULL;

  if (!get_args(env, info, 1, argv)) return NULL;
  NAPI_OK(napi_typeof(env, argv[0], &t));
  if (t != napi_object) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "createContext: options must be an object");
    return NULL;
  }

  /* ciphers: a non-empty string */
  NAPI_OK(napi_get_named_property(env, argv[0], "ciphers", &v));
  NAPI_OK(napi_typeof(env, v, &t));
  if (t != napi_string) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "createContext: options.ciphers must be a string");
    return NULL;
  }
  NAPI_OK(napi_get_value_string_utf8(env, v, NULL, 0, &len));
  if (len == 0 || len > MAX_CIPHER_LIST) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "createContext: options.ciphers must be 1..4096 characters");
    return NULL;
  }
  NAPI_OK(napi_get_value_string_utf8(env, v, ciphers, sizeof ciphers, &len));

  /* psk: boolean (absent = false) */
  NAPI_OK(napi_get_named_property(env, argv[0], "psk", &v));
  if (!is_nullish(env, v) && napi_get_value_bool(env, v, &psk) != napi_ok) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "createContext: options.psk must be a boolean");
    return NULL;
  }

  /* mtu: integer, MIN_MTU..MAX_MTU */
  NAPI_OK(napi_get_named_property(env, argv[0], "mtu", &v));
  if (napi_get_value_double(env, v, &mtu_d) != napi_ok) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "createContext: options.mtu must be a number");
    return NULL;
  }
  if (!(mtu_d >= MIN_MTU && mtu_d <= MAX_MTU) || mtu_d != (double)(long)mtu_d) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "createContext: options.mtu must be an integer in 256..65507");
    return NULL;
  }

  /* verifyClient: 'none' | 'optional' | 'require' (absent = 'none') */
  NAPI_OK(napi_get_named_property(env, argv[0], "verifyClient", &v));
  if (!is_nullish(env, v)) {
    NAPI_OK(napi_typeof(env, v, &t));
    if (t == napi_string) NAPI_OK(napi_get_value_string_utf8(env, v, verify, sizeof verify, &len));
    if (t != napi_string || (strcmp(verify, "none") && strcmp(verify, "optional") && strcmp(verify, "require"))) {
      napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE",
                            "createContext: options.verifyClient must be 'none', 'optional' or 'require'");
      return NULL;
    }
  }
  if (!strcmp(verify, "optional")) verify_mode = SSL_VERIFY_PEER;
  if (!strcmp(verify, "require")) verify_mode = SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT;

  if (!opt_buffer(env, argv[0], "certificate", &cert, &cert_len) ||
      !opt_buffer(env, argv[0], "privateKey", &key, &key_len) || !opt_buffer(env, argv[0], "ca", &ca, &ca_len))
    return NULL;
  if ((cert == NULL) != (key == NULL)) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE",
                          "createContext: options.certificate and options.privateKey go together");
    return NULL;
  }
  if (verify_mode != SSL_VERIFY_NONE && ca == NULL) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE", "createContext: options.verifyClient needs options.ca");
    return NULL;
  }
  if (cert_len > INT32_MAX || key_len > INT32_MAX || ca_len > INT32_MAX) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "createContext: PEM input too large");
    return NULL;
  }

  ERR_clear_error();
  c = SSL_CTX_new(DTLS_server_method());
  if (c == NULL) {
    throw_ssl(env, "createContext");
    return NULL;
  }
  /* DTLS 1.2 only: 1.0 is obsolete (RFC 8996) and 1.3 is not in OpenSSL 3.0. */
  if (!SSL_CTX_set_min_proto_version(c, DTLS1_2_VERSION) || !SSL_CTX_set_max_proto_version(c, DTLS1_2_VERSION)) {
    throw_ssl(env, "createContext: DTLS 1.2");
    goto fail;
  }
  /* NO_QUERY_MTU: a memory BIO cannot tell the MTU; SSL_set_mtu does.
   * NO_TICKET + no session cache: a resumed session would skip pskLookup and
   * client verification (revoked keys would keep working), and a server
   * cache grows with every handshake. NO_RENEGOTIATION: no mid-session
   * handshakes to handle or to be flooded with. */
  SSL_CTX_set_options(c, SSL_OP_NO_QUERY_MTU | SSL_OP_NO_TICKET | SSL_OP_NO_RENEGOTIATION |
                             SSL_OP_CIPHER_SERVER_PREFERENCE);
  SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_OFF);
  if (!SSL_CTX_set_cipher_list(c, ciphers)) {
    throw_ssl(env, "createContext: no usable cipher in options.ciphers");
    goto fail;
  }
  if (cert != NULL && !load_certificate(env, c, cert, cert_len, key, key_len)) goto fail;
  if (ca != NULL && !load_ca(env, c, ca, ca_len)) goto fail;
  if (!any_cipher_usable(c, psk)) {
    throw_msg(env, false, "ERR_DTLS_NO_CIPHER", "createContext: none of the ciphers '", ciphers,
              "' is usable (PSK suites need psk: true, ECDSA/RSA suites a certificate and key of that type)");
    goto fail;
  }
  SSL_CTX_set_verify(c, verify_mode, NULL);
  if (psk) SSL_CTX_set_psk_server_callback(c, psk_server_cb);
  SSL_CTX_set_cookie_generate_cb(c, cookie_generate);
  SSL_CTX_set_cookie_verify_cb(c, cookie_verify);

  ctx = calloc(1, sizeof *ctx);
  if (ctx == NULL || RAND_bytes(secret, sizeof secret) != 1) {
    napi_throw_error(env, "ERR_DTLS_NO_MEMORY", "createContext: out of memory or entropy");
    goto fail;
  }
  ctx->ssl_ctx = c;
  ctx->refs = 1;
  ctx->mtu = (size_t)mtu_d;
  /* A random secret until setCookieSecrets: cookies work from the start. */
  secret_set(ctx, 0, secret, sizeof secret);
  OPENSSL_cleanse(secret, sizeof secret);
  if (ctx->secret[0] == NULL) {
    napi_throw_error(env, "ERR_DTLS_NO_MEMORY", "createContext: out of memory");
    goto fail;
  }
  result = wrap_new(env, ctx, &TAG_CONTEXT, finalize_context);
  if (result == NULL) goto fail;
  return result;
fail:
  if (ctx != NULL) {
    ctx->refs = 1;
    ctx_unref(ctx); /* frees c too */
  } else {
    SSL_CTX_free(c);
  }
  return NULL;
}

/* setCookieSecrets(ctx, current, previous | null): cookies are made with
 * `current` and accepted under either (rotation without a failed round). */
static napi_value js_set_cookie_secrets(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  Ctx *ctx;
  const uint8_t *cur = NULL, *prev = NULL;
  size_t cur_len = 0, prev_len = 0;
  if (!get_args(env, info, 3, argv)) return NULL;
  if ((ctx = unwrap(env, argv[0], &TAG_CONTEXT, "context")) == NULL) return NULL;
  if (!get_buffer(env, argv[1], "current", &cur, &cur_len)) return NULL;
  if (!is_nullish(env, argv[2]) && !get_buffer(env, argv[2], "previous", &prev, &prev_len)) return NULL;
  if (cur_len < MIN_SECRET || cur_len > MAX_SECRET || (prev != NULL && (prev_len < MIN_SECRET || prev_len > MAX_SECRET))) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "setCookieSecrets: secrets must be 16..1024 bytes");
    return NULL;
  }
  secret_set(ctx, 0, cur, cur_len);
  secret_set(ctx, 1, prev, prev_len);
  if (ctx->secret[0] == NULL || (prev != NULL && ctx->secret[1] == NULL)) {
    napi_throw_error(env, "ERR_DTLS_NO_MEMORY", "setCookieSecrets: out of memory");
    return NULL;
  }
  return NULL; /* undefined */
}

/* createListener(ctx) -> Listener: the one SSL that answers unknown peers. */
static napi_value js_create_listener(napi_env env, napi_callback_info info) {
  napi_value argv[1], obj;
  Ctx *ctx;
  Listener *l;
  if (!get_args(env, info, 1, argv)) return NULL;
  if ((ctx = unwrap(env, argv[0], &TAG_CONTEXT, "context")) == NULL) return NULL;
  ERR_clear_error();
  l = calloc(1, sizeof *l);
  if (l == NULL || (l->conn = conn_new(ctx)) == NULL) {
    free(l);
    throw_ssl(env, "createListener");
    return NULL;
  }
  obj = wrap_new(env, l, &TAG_LISTENER, finalize_listener);
  if (obj == NULL) finalize_listener(env, l, NULL);
  return obj;
}

static napi_value make_listen_result(napi_env env, napi_value datagrams, napi_value session, const char *error) {
  napi_value res, null_v, err_v;
  NAPI_OK(napi_create_object(env, &res));
  NAPI_OK(napi_get_null(env, &null_v));
  err_v = null_v;
  if (error != NULL) NAPI_OK(napi_create_string_utf8(env, error, NAPI_AUTO_LENGTH, &err_v));
  NAPI_OK(napi_set_named_property(env, res, "datagrams", datagrams));
  NAPI_OK(napi_set_named_property(env, res, "session", session ? session : null_v));
  NAPI_OK(napi_set_named_property(env, res, "error", err_v));
  return res;
}

/* listen(listener, peerKey, datagram, pskLookup) -> { datagrams, session, error }.
 * A peer without a valid cookie gets a HelloVerifyRequest and leaves no
 * state; with one, the listener's SSL becomes its session. */
static napi_value js_listen(napi_env env, napi_callback_info info) {
  napi_value argv[4], fn, datagrams, session_obj;
  napi_valuetype t;
  Listener *l;
  Conn *conn, *fresh;
  const uint8_t *data;
  size_t len, key_len = 0;
  char key[MAX_PEER_KEY + 1];
  BIO_ADDR *addr;
  int r;

  if (!get_args(env, info, 4, argv)) return NULL;
  if ((l = unwrap(env, argv[0], &TAG_LISTENER, "listener")) == NULL) return NULL;
  conn = l->conn;
  if (conn->busy) {
    napi_throw_error(env, "ERR_DTLS_BUSY", "listener is busy (called from inside its own pskLookup)");
    return NULL;
  }
  NAPI_OK(napi_typeof(env, argv[1], &t));
  if (t != napi_string) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "listen: peerKey must be a string");
    return NULL;
  }
  NAPI_OK(napi_get_value_string_utf8(env, argv[1], NULL, 0, &key_len));
  if (key_len == 0 || key_len > MAX_PEER_KEY) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "listen: peerKey must be 1..256 bytes");
    return NULL;
  }
  NAPI_OK(napi_get_value_string_utf8(env, argv[1], key, sizeof key, &key_len));
  if (!get_buffer(env, argv[2], "datagram", &data, &len) || !get_lookup(env, argv[3], &fn)) return NULL;
  if (len == 0 || len > MAX_DATAGRAM) {
    datagrams = empty_array(env);
    return datagrams ? make_listen_result(env, datagrams, NULL, NULL) : NULL;
  }

  /* The cookie callbacks read the peer key from the Conn. */
  {
    char *copy = malloc(key_len);
    addr = BIO_ADDR_new();
    if (copy == NULL || addr == NULL) {
      free(copy);
      BIO_ADDR_free(addr);
      napi_throw_error(env, "ERR_DTLS_NO_MEMORY", "listen: out of memory");
      return NULL;
    }
    memcpy(copy, key, key_len);
    free(conn->peer);
    conn->peer = copy;
    conn->peer_len = key_len;
  }

  /* The listener keeps its record buffers: it serves every unknown peer. */
  op_begin(env, conn, fn, false);
  BIO_write(SSL_get_rbio(conn->ssl), data, (int)len);
  r = DTLSv1_listen(conn->ssl, addr);
  BIO_ADDR_free(addr);
  if (r <= 0) {
    /* HelloVerifyRequest, or nothing: no state is kept for this peer. */
    datagrams = drain(env, conn);
    op_end(conn, false);
    return datagrams ? make_listen_result(env, datagrams, NULL, NULL) : NULL;
  }

  /* Cookie verified: this SSL becomes the peer's session and carries on
   * with the ClientHello it has buffered; the listener gets a fresh SSL. */
  fresh = conn_new(conn->ctx);
  if (fresh == NULL) {
    op_end(conn, false);
    SSL_clear(conn->ssl);
    napi_throw_error(env, "ERR_DTLS_NO_MEMORY", "listen: out of memory for a new session");
    return NULL;
  }
  conn->state = ST_HANDSHAKING;
  r = SSL_accept(conn->ssl);
  if (r <= 0) settle(conn, r, "handshake failed");
  else conn->state = ST_ESTABLISHED; /* not expected with a first flight, but harmless */
  datagrams = drain(env, conn);
  op_end(conn, true);
  l->conn = fresh;
  /* Refused at once (e.g. no shared cipher): the alert goes out, no state is kept. */
  if (datagrams == NULL || conn->state == ST_FAILED) {
    const char *error = conn->error;
    conn_destroy(env, conn);
    return datagrams ? make_listen_result(env, datagrams, NULL, error) : NULL;
  }
  session_obj = wrap_new(env, conn, &TAG_SESSION, finalize_session);
  if (session_obj == NULL) {
    conn_destroy(env, conn);
    return NULL;
  }
  {
    int64_t ignored;
    if (napi_adjust_external_memory(env, SESSION_COST, &ignored) == napi_ok) conn->accounted = true;
  }
  return make_listen_result(env, datagrams, session_obj, NULL);
}

static napi_value make_feed_result(napi_env env, napi_value datagrams, napi_value data, const Conn *conn) {
  napi_value res, state, error;
  NAPI_OK(napi_create_object(env, &res));
  NAPI_OK(napi_create_int32(env, conn->state, &state));
  if (conn->state == ST_FAILED && conn->error != NULL) NAPI_OK(napi_create_string_utf8(env, conn->error, NAPI_AUTO_LENGTH, &error));
  else NAPI_OK(napi_get_null(env, &error));
  NAPI_OK(napi_set_named_property(env, res, "datagrams", datagrams));
  NAPI_OK(napi_set_named_property(env, res, "data", data));
  NAPI_OK(napi_set_named_property(env, res, "state", state));
  NAPI_OK(napi_set_named_property(env, res, "error", error));
  return res;
}

/* The shortest ciphertext an encrypted record of this session's AEAD suite
 * can have (explicit nonce + tag); 0 for other suites (CBC ones discard
 * short records themselves: measured). */
static size_t aead_min_length(const SSL *ssl) {
  const SSL_CIPHER *c = SSL_get_pending_cipher(ssl);
  if (c == NULL) c = SSL_get_current_cipher(ssl);
  if (c == NULL || !SSL_CIPHER_is_aead(c)) return 0;
  if (SSL_CIPHER_get_cipher_nid(c) == NID_chacha20_poly1305) return 16; /* tag 16, implicit nonce */
  if (strstr(SSL_CIPHER_get_name(c), "CCM8") != NULL) return 16;       /* nonce 8 + tag 8 */
  return 24;                                                             /* GCM, CCM: nonce 8 + tag 16 */
}

static bool drop_record(const uint8_t *rec, size_t body, size_t aead_min) {
  bool encrypted = rec[3] != 0 || rec[4] != 0; /* epoch != 0 */
  return encrypted && body > 0 && body < aead_min;
}

/* The records of a datagram that OpenSSL may safely see: `in` itself (the
 * usual case), or a filtered copy in *copy for the caller to free; *len is
 * updated. Dropped, as RFC 6347 4.1.2.7 allows for invalid records: a
 * truncated tail, and encrypted records too short for the AEAD suite, which
 * would otherwise end the session on a single spoofed datagram. */
static const uint8_t *valid_records(const SSL *ssl, const uint8_t *in, size_t *len, uint8_t **copy) {
  size_t min = aead_min_length(ssl), n = *len, i = 0, kept = 0;
  bool dropping = false;
  *copy = NULL;
  while (i + REC_HEADER <= n) {
    size_t body = ((size_t)in[i + 11] << 8) | in[i + 12];
    if (i + REC_HEADER + body > n) break;
    dropping = dropping || drop_record(in + i, body, min);
    i += REC_HEADER + body;
  }
  if (!dropping) {
    *len = i;
    return in;
  }
  if ((*copy = malloc(i)) == NULL) {
    *len = 0;
    return in;
  }
  for (size_t j = 0; j < i;) {
    size_t body = ((size_t)in[j + 11] << 8) | in[j + 12];
    if (!drop_record(in + j, body, min)) {
      memcpy(*copy + kept, in + j, REC_HEADER + body);
      kept += REC_HEADER + body;
    }
    j += REC_HEADER + body;
  }
  *len = kept;
  return *copy;
}

/* feed(session, datagram, pskLookup) -> { datagrams, data, state, error }. */
static napi_value js_feed(napi_env env, napi_callback_info info) {
  napi_value argv[3], fn, datagrams, data_arr, buf;
  Conn *conn;
  const uint8_t *data;
  size_t len;
  uint32_t count = 0;
  bool ok = true;
  unsigned char plain[READ_CHUNK];
  uint8_t *copy = NULL;

  if (!get_args(env, info, 3, argv)) return NULL;
  if ((conn = get_session(env, argv[0])) == NULL) return NULL;
  if (!get_buffer(env, argv[1], "datagram", &data, &len) || !get_lookup(env, argv[2], &fn)) return NULL;
  NAPI_OK(napi_create_array(env, &data_arr));
  /* Closed and failed sessions stay safe to feed: they answer their state. */
  if (conn->state < ST_CLOSED && len > 0 && len <= MAX_DATAGRAM) data = valid_records(conn->ssl, data, &len, &copy);
  if (conn->state >= ST_CLOSED || len == 0 || len > MAX_DATAGRAM) {
    free(copy);
    datagrams = empty_array(env);
    return datagrams ? make_feed_result(env, datagrams, data_arr, conn) : NULL;
  }

  if (!op_begin(env, conn, fn, true)) {
    free(copy);
    return NULL;
  }
  BIO_write(SSL_get_rbio(conn->ssl), data, (int)len);
  free(copy);
  if (!SSL_is_init_finished(conn->ssl)) {
    int r = SSL_do_handshake(conn->ssl);
    if (r <= 0) settle(conn, r, "handshake failed");
  }
  if (conn->state == ST_HANDSHAKING && SSL_is_init_finished(conn->ssl)) conn->state = ST_ESTABLISHED;
  /* Every application record of the datagram, until WANT_READ. */
  for (int records = 0; ok && conn->state == ST_ESTABLISHED && records < MAX_RECORDS_PER_DATAGRAM; records++) {
    int n = SSL_read(conn->ssl, plain, sizeof plain);
    if (n == 0 && SSL_get_error(conn->ssl, n) == SSL_ERROR_SYSCALL && ERR_peek_error() == 0 &&
        (SSL_get_shutdown(conn->ssl) & SSL_RECEIVED_SHUTDOWN) == 0) {
      /* An empty application record (legal, RFC 5246 6.2.1): OpenSSL returns 0 for it as if the
       * transport had failed. Nothing to deliver; the next record follows. */
      continue;
    }
    if (n <= 0) {
      settle(conn, n, "read failed");
      break;
    }
    ok = napi_create_buffer_copy(env, (size_t)n, plain, NULL, &buf) == napi_ok &&
         napi_set_element(env, data_arr, count++, buf) == napi_ok;
  }
  /* Answer the peer's close_notify with ours (the pair is the clean close). */
  if (conn->state == ST_CLOSED && !conn->shut) {
    conn->shut = true;
    (void)SSL_shutdown(conn->ssl);
  }
  datagrams = drain(env, conn);
  op_end(conn, true);
  if (!ok) {
    throw_napi(env);
    return NULL;
  }
  return datagrams ? make_feed_result(env, datagrams, data_arr, conn) : NULL;
}

/* write(session, plaintext) -> Buffer[]: one record, within the data MTU. */
static napi_value js_write(napi_env env, napi_callback_info info) {
  napi_value argv[2], out;
  Conn *conn;
  const uint8_t *data;
  size_t len, data_mtu;
  int r;
  char msg[160];

  if (!get_args(env, info, 2, argv)) return NULL;
  if ((conn = get_session(env, argv[0])) == NULL) return NULL;
  if (!get_buffer(env, argv[1], "plaintext", &data, &len)) return NULL;
  if (conn->state != ST_ESTABLISHED) {
    napi_throw_error(env, "ERR_DTLS_NOT_ESTABLISHED", "write: session is not established");
    return NULL;
  }
  /* SSL_write does not fragment to the MTU: a longer record would leave as
   * one oversized datagram. CoAP must use block-wise transfers instead. */
  data_mtu = DTLS_get_data_mtu(conn->ssl);
  if (len > data_mtu) {
    snprintf(msg, sizeof msg, "write: %zu bytes exceed the data MTU of %zu bytes", len, data_mtu);
    napi_throw_range_error(env, "ERR_DTLS_TOO_LONG", msg);
    return NULL;
  }
  if (len == 0) return empty_array(env);
  if (!op_begin(env, conn, NULL, true)) return NULL;
  r = SSL_write(conn->ssl, data, (int)len);
  if (r <= 0) {
    settle(conn, r, "write failed");
    op_end(conn, true);
    napi_throw_error(env, "ERR_DTLS_WRITE", conn->error ? conn->error : "write failed");
    return NULL;
  }
  out = drain(env, conn);
  op_end(conn, true);
  return out;
}

/* timeout(session) -> ms until handleTimeout is due, -1 without a timer. */
static napi_value js_timeout(napi_env env, napi_callback_info info) {
  napi_value argv[1], out;
  Conn *conn;
  struct timeval tv = {0, 0};
  double ms = -1;
  if (!get_args(env, info, 1, argv)) return NULL;
  if ((conn = get_session(env, argv[0])) == NULL) return NULL;
  if (conn->state <= ST_ESTABLISHED && DTLSv1_get_timeout(conn->ssl, &tv) == 1)
    ms = (double)tv.tv_sec * 1000 + (double)((tv.tv_usec + 999) / 1000); /* round up: never early */
  ERR_clear_error();
  NAPI_OK(napi_create_double(env, ms, &out));
  return out;
}

/* handleTimeout(session) -> Buffer[]: the retransmitted flight, if due. */
static napi_value js_handle_timeout(napi_env env, napi_callback_info info) {
  napi_value argv[1], out;
  Conn *conn;
  if (!get_args(env, info, 1, argv)) return NULL;
  if ((conn = get_session(env, argv[0])) == NULL) return NULL;
  if (conn->state > ST_ESTABLISHED) return empty_array(env);
  if (!op_begin(env, conn, NULL, true)) return NULL;
  /* < 0: OpenSSL gave up (too many retransmissions): a failed session. */
  if (DTLSv1_handle_timeout(conn->ssl) < 0) {
    const char *reason = take_error();
    conn->state = ST_FAILED;
    conn->error = reason ? reason : "handshake timed out";
  }
  out = drain(env, conn);
  op_end(conn, true);
  return out;
}

/* shutdown(session) -> Buffer[]: our close_notify, once. */
static napi_value js_shutdown(napi_env env, napi_callback_info info) {
  napi_value argv[1], out;
  Conn *conn;
  if (!get_args(env, info, 1, argv)) return NULL;
  if ((conn = get_session(env, argv[0])) == NULL) return NULL;
  /* Only a completed session has anything to close. */
  if (conn->state != ST_ESTABLISHED || conn->shut) return empty_array(env);
  if (!op_begin(env, conn, NULL, true)) return NULL;
  conn->shut = true;
  (void)SSL_shutdown(conn->ssl); /* once: sends close_notify, does not wait for the peer's */
  conn->state = ST_CLOSED;
  out = drain(env, conn);
  op_end(conn, true);
  return out;
}

/* info(session) -> { identity, cipher, subject, dataMtu, state }. */
static napi_value js_info(napi_env env, napi_callback_info info) {
  napi_value argv[1], res, v;
  Conn *conn;
  const char *identity;
  const SSL_CIPHER *cipher;
  X509 *peer;
  if (!get_args(env, info, 1, argv)) return NULL;
  if ((conn = get_session(env, argv[0])) == NULL) return NULL;
  NAPI_OK(napi_create_object(env, &res));

  identity = SSL_get_psk_identity(conn->ssl);
  if (identity != NULL) NAPI_OK(napi_create_buffer_copy(env, strlen(identity), identity, NULL, &v));
  else NAPI_OK(napi_get_null(env, &v));
  NAPI_OK(napi_set_named_property(env, res, "identity", v));

  cipher = SSL_get_current_cipher(conn->ssl);
  if (cipher != NULL) NAPI_OK(napi_create_string_utf8(env, SSL_CIPHER_get_name(cipher), NAPI_AUTO_LENGTH, &v));
  else NAPI_OK(napi_get_null(env, &v));
  NAPI_OK(napi_set_named_property(env, res, "cipher", v));

  /* The subject only of a certificate that passed verification. */
  peer = SSL_get0_peer_certificate(conn->ssl);
  NAPI_OK(napi_get_null(env, &v));
  if (peer != NULL && SSL_get_verify_result(conn->ssl) == X509_V_OK) {
    BIO *b = BIO_new(BIO_s_mem());
    char *p = NULL;
    long n;
    if (b != NULL && X509_NAME_print_ex(b, X509_get_subject_name(peer), 0, XN_FLAG_RFC2253) >= 0 &&
        (n = BIO_get_mem_data(b, &p)) >= 0) {
      if (napi_create_string_utf8(env, p, (size_t)n, &v) != napi_ok) {
        BIO_free(b);
        throw_napi(env);
        return NULL;
      }
    }
    BIO_free(b);
    ERR_clear_error();
  }
  NAPI_OK(napi_set_named_property(env, res, "subject", v));

  NAPI_OK(napi_create_uint32(env, (uint32_t)DTLS_get_data_mtu(conn->ssl), &v));
  NAPI_OK(napi_set_named_property(env, res, "dataMtu", v));
  /* Extra: lets the caller see a failure found by handleTimeout. */
  NAPI_OK(napi_create_int32(env, conn->state, &v));
  NAPI_OK(napi_set_named_property(env, res, "state", v));
  return res;
}

/* free(session): the SSL now; the small Conn at finalization. */
static napi_value js_free(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  Conn *conn;
  if (!get_args(env, info, 1, argv)) return NULL;
  if ((conn = unwrap(env, argv[0], &TAG_SESSION, "session")) == NULL) return NULL;
  if (conn->busy) {
    napi_throw_error(env, "ERR_DTLS_BUSY", "session is busy (called from inside its own pskLookup)");
    return NULL;
  }
  /* Idempotent; the Conn itself stays until the finalizer, so later calls
   * find ssl == NULL and throw "session is freed". */
  conn_free_ssl(env, conn);
  return NULL;
}

/* ------------------------------------------------------------------------ */

static napi_value init(napi_env env, napi_value exports) {
  const napi_property_descriptor props[] = {
      {"opensslVersion", NULL, js_openssl_version, NULL, NULL, NULL, napi_enumerable, NULL},
      {"createContext", NULL, js_create_context, NULL, NULL, NULL, napi_enumerable, NULL},
      {"setCookieSecrets", NULL, js_set_cookie_secrets, NULL, NULL, NULL, napi_enumerable, NULL},
      {"createListener", NULL, js_create_listener, NULL, NULL, NULL, napi_enumerable, NULL},
      {"listen", NULL, js_listen, NULL, NULL, NULL, napi_enumerable, NULL},
      {"feed", NULL, js_feed, NULL, NULL, NULL, napi_enumerable, NULL},
      {"write", NULL, js_write, NULL, NULL, NULL, napi_enumerable, NULL},
      {"timeout", NULL, js_timeout, NULL, NULL, NULL, napi_enumerable, NULL},
      {"handleTimeout", NULL, js_handle_timeout, NULL, NULL, NULL, napi_enumerable, NULL},
      {"shutdown", NULL, js_shutdown, NULL, NULL, NULL, napi_enumerable, NULL},
      {"info", NULL, js_info, NULL, NULL, NULL, napi_enumerable, NULL},
      {"free", NULL, js_free, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  if (napi_define_properties(env, exports, sizeof props / sizeof props[0], props) != napi_ok) {
    throw_napi(env);
    return NULL;
  }
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
