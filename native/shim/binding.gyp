{
  # The loader's torch-free shim (shim.c), shipped prebuilt next to the variants. Built by
  # scripts/package.js (prebuildify in a scratch copy of this folder); depends only on libc.
  "targets": [
    {
      "target_name": "fisherlens_shim",
      "sources": ["shim.c"],
      "defines": ["NAPI_VERSION=8"],
      "cflags": ["-O2", "-Wall"],
      "libraries": ["-ldl"]
    }
  ]
}
