{
  # node-gyp build of the same native/ sources: the prebuilt variants (scripts/package.js runs
  # prebuildify on it) and `npx fisherlens build`. LibTorch comes from scripts/find-libtorch.js.
  # rpath is $ORIGIN only: binaries carry no build-machine path; the loader (lib/native.ts) opens
  # the chosen LibTorch's libraries by absolute path through the shim (native/shim) first.
  # Not in the npm package's root (npm would run node-gyp at install); it ships as
  # scripts/binding.gyp for `fisherlens build`.
  "variables": {
    "torch_include": "<!(node scripts/find-libtorch.js --include)",
    "torch_libdir": "<!(node scripts/find-libtorch.js --libdir)",
    "torch_libs": "<!(node scripts/find-libtorch.js --libs)",
    "torch_abi": "<!(node scripts/find-libtorch.js --abi)",
    "fl_version": "<!(node -p \"require('./package.json').version\")"
  },
  "targets": [
    {
      "target_name": "fisherlens",
      "sources": [
        "<!@(node -e \"const g=require('fs');const p=require('path');const out=[];for(const d of ['native','native/binding','native/common','native/models'])for(const f of g.readdirSync(d))if(f.endsWith('.cc'))out.push(p.join(d,f));console.log(out.join(' '))\")"
      ],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "native",
        "<@(torch_include)"
      ],
      "defines": [
        "NAPI_VERSION=8", "NODE_ADDON_API_DISABLE_DEPRECATED", "NAPI_CPP_EXCEPTIONS",
        "FL_ADDON_VERSION=\"<(fl_version)\"",
        "_GLIBCXX_USE_CXX11_ABI=<(torch_abi)"
      ],
      "cflags!": ["-fno-exceptions", "-fno-rtti"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti", "-std=gnu++17", "-std=gnu++1y"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-frtti", "-O2", "-Wno-unused-parameter"],
      "libraries": [
        "-L<(torch_libdir)",
        "-Wl,--no-as-needed",
        "<@(torch_libs)",
        "-Wl,--as-needed",
        "-lz",
        "-Wl,-rpath,'$$ORIGIN'"
      ]
    }
  ]
}
