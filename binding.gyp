{
  # The DTLS 1.2 server engine of the coaps listener (native/dtls.c).
  # It links no library: every SSL symbol resolves from the node binary, so the
  # headers must be the ones of the Node.js it is built for (nodedir/include/node).
  "targets": [
    {
      "target_name": "kuzzle_coap_dtls",
      "sources": ["native/dtls.c"],
      # Node's common.gypi builds Release with -O3; this file wants -O2.
      "cflags!": ["-O3"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wshadow", "-Wformat=2"],
      "cflags_c": ["-std=gnu11"],
      "xcode_settings": {
        "GCC_OPTIMIZATION_LEVEL": "2",
        "GCC_ENABLE_CPP_EXCEPTIONS": "NO",
        "WARNING_CFLAGS": ["-Wall", "-Wextra", "-Wno-unused-parameter"]
      },
      "msvs_settings": {
        "VCCLCompilerTool": { "Optimization": 2, "ExceptionHandling": 0, "WarningLevel": 3 }
      }
    }
  ]
}
