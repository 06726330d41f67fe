{
  # The bench's DTLS client (client.c): built by `npm run bench`, never shipped.
  # Like the plugin's engine it links no library: OpenSSL comes from the node binary.
  "targets": [
    {
      "target_name": "bench_dtls_client",
      "sources": ["client.c"],
      "cflags!": ["-O3"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "cflags_c": ["-std=gnu11"]
    }
  ]
}
