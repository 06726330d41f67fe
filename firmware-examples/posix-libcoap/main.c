/*
 * kuzzle-sensor: the POSIX (Linux, macOS) firmware example, on libcoap 3.
 * Options win over environment variables; see usage() or README.md.
 *
 * Signals: SIGHUP simulates a network change (new socket and session, the
 * observation registered again); SIGINT/SIGTERM stop it (the observation is
 * cancelled first).
 */
#define _POSIX_C_SOURCE 200809L
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kiot_libcoap.h"

static void usage(const char *program) {
  fprintf(stderr,
          "usage: %s [options]\n"
          "  -H, --host HOST        server (KUZZLE_HOST, default 127.0.0.1)\n"
          "  -p, --port PORT        CoAP UDP port (KUZZLE_COAP_PORT, default 5683; 5684 with a PSK)\n"
          "  -u, --username NAME    auth:login, local strategy (KUZZLE_USERNAME)\n"
          "  -P, --password SECRET  (KUZZLE_PASSWORD; prefer the variable: options show in ps)\n"
          "  -j, --jwt TOKEN        a ready token or API key instead of a login (KUZZLE_JWT)\n"
          "  -L, --token-lifetime D lifetime auth:login asks for, e.g. 1h (KUZZLE_TOKEN_LIFETIME;\n"
          "                         default: the server's); renewed 60 s before it ends\n"
          "  -I, --psk-identity ID  coaps: DTLS with this PSK identity (KUZZLE_PSK_IDENTITY); without\n"
          "                         --jwt or --username it is the Kuzzle identity: no login, no token\n"
          "  -K, --psk-key KEY      the pre-shared key, as text (KUZZLE_PSK_KEY; prefer the variable)\n"
          "  -i, --index NAME       (KUZZLE_INDEX, default iot)\n"
          "  -s, --sensors NAME     collection of the reports (KUZZLE_SENSORS, default sensors)\n"
          "  -c, --commands NAME    collection observed (KUZZLE_COMMANDS, default commands)\n"
          "  -t, --period-ms MS     reporting period (KUZZLE_PERIOD_MS, default 5000)\n"
          "  -T, --max-time-s S     stop after S seconds (default 0: never)\n"
          "  -n, --max-docs N       stop after N documents (default 0: never)\n"
          "  -v, --verbose LEVEL    libcoap log level, 0-8 (default 4: warnings; 7 shows every PDU)\n",
          program);
}

static const char *env(const char *name, const char *fallback) {
  const char *value = getenv(name);
  return value != NULL && value[0] != '\0' ? value : fallback;
}

/* A non-negative integer option, or exit. */
static unsigned long number(const char *text, const char *what, unsigned long max) {
  char *end;
  unsigned long value = strtoul(text, &end, 10);
  if (text[0] == '\0' || text[0] == '-' || *end != '\0' || value > max) {
    fprintf(stderr, "invalid %s: %s\n", what, text);
    exit(2);
  }
  return value;
}

static void on_signal(int signal_number) {
  if (signal_number == SIGHUP) kiot_device_network_changed();
  else kiot_device_stop();
}

int main(int argc, char **argv) {
  kiot_device_config config;
  memset(&config, 0, sizeof config);
  config.host = env("KUZZLE_HOST", "127.0.0.1");
  const char *port = env("KUZZLE_COAP_PORT", NULL);
  config.username = env("KUZZLE_USERNAME", NULL);
  config.password = env("KUZZLE_PASSWORD", NULL);
  config.jwt = env("KUZZLE_JWT", NULL);
  config.token_lifetime = env("KUZZLE_TOKEN_LIFETIME", NULL);
  config.psk_identity = env("KUZZLE_PSK_IDENTITY", NULL);
  config.psk_key = env("KUZZLE_PSK_KEY", NULL);
  config.index = env("KUZZLE_INDEX", "iot");
  config.sensors = env("KUZZLE_SENSORS", "sensors");
  config.commands = env("KUZZLE_COMMANDS", "commands");
  config.period_ms = (uint32_t)number(env("KUZZLE_PERIOD_MS", "5000"), "period", KIOT_PERIOD_MAX_MS);
  config.coap_log_level = 4;

  static const struct option options[] = {
      {"host", required_argument, NULL, 'H'},     {"port", required_argument, NULL, 'p'},
      {"username", required_argument, NULL, 'u'}, {"password", required_argument, NULL, 'P'},
      {"jwt", required_argument, NULL, 'j'},      {"index", required_argument, NULL, 'i'},
      {"token-lifetime", required_argument, NULL, 'L'},
      {"psk-identity", required_argument, NULL, 'I'}, {"psk-key", required_argument, NULL, 'K'},
      {"sensors", required_argument, NULL, 's'},  {"commands", required_argument, NULL, 'c'},
      {"period-ms", required_argument, NULL, 't'}, {"max-time-s", required_argument, NULL, 'T'},
      {"max-docs", required_argument, NULL, 'n'}, {"verbose", required_argument, NULL, 'v'},
      {"help", no_argument, NULL, 'h'},           {NULL, 0, NULL, 0},
  };
  int option;
  while ((option = getopt_long(argc, argv, "H:p:u:P:j:L:I:K:i:s:c:t:T:n:v:h", options, NULL)) != -1) {
    switch (option) {
      case 'H': config.host = optarg; break;
      case 'p': port = optarg; break;
      case 'u': config.username = optarg; break;
      case 'P': config.password = optarg; break;
      case 'j': config.jwt = optarg; break;
      case 'L': config.token_lifetime = optarg; break;
      case 'I': config.psk_identity = optarg; break;
      case 'K': config.psk_key = optarg; break;
      case 'i': config.index = optarg; break;
      case 's': config.sensors = optarg; break;
      case 'c': config.commands = optarg; break;
      case 't': config.period_ms = (uint32_t)number(optarg, "period", KIOT_PERIOD_MAX_MS); break;
      case 'T': config.max_time_ms = (uint32_t)number(optarg, "max time", 4000000) * 1000u; break;
      case 'n': config.max_docs = (uint32_t)number(optarg, "max docs", 1000000000); break;
      case 'v': config.coap_log_level = (int)number(optarg, "log level", 8); break;
      case 'h': usage(argv[0]); return 0;
      default: usage(argv[0]); return 2;
    }
  }
  if (optind < argc) {
    usage(argv[0]);
    return 2;
  }
  int dtls = config.psk_identity != NULL;
  if (dtls && (config.psk_key == NULL || config.psk_key[0] == '\0')) {
    fprintf(stderr, "a PSK identity needs its key (--psk-key or KUZZLE_PSK_KEY)\n");
    return 2;
  }
  config.port = (uint16_t)number(port != NULL ? port : dtls ? "5684" : "5683", "port", 65535);
  if (config.period_ms < KIOT_PERIOD_MIN_MS) {
    fprintf(stderr, "the period must be at least %d ms\n", KIOT_PERIOD_MIN_MS);
    return 2;
  }

  /* Line-buffered even into a pipe: every step shows up when it happens. */
  setvbuf(stdout, NULL, _IOLBF, 0);

  struct sigaction action;
  memset(&action, 0, sizeof action);
  action.sa_handler = on_signal; /* no SA_RESTART: a signal wakes libcoap's wait */
  sigemptyset(&action.sa_mask);
  sigaction(SIGHUP, &action, NULL);
  sigaction(SIGINT, &action, NULL);
  sigaction(SIGTERM, &action, NULL);
  signal(SIGPIPE, SIG_IGN);

  return kiot_device_run(&config);
}
