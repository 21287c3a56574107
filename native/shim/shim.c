// The loader's torch-free shim: dlopen()s LibTorch's libraries by absolute path before the addon
// is required, so the addon's NEEDED entries (libtorch.so, libc10.so, ...) are satisfied by the
// LibTorch the loader chose (glibc matches an already loaded object by SONAME) with no
// LD_LIBRARY_PATH and no rpath to that folder. Node's process.dlopen cannot do this: it unloads
// any library that is not an addon. Libraries are never closed (LibTorch registers global state).
// Plain C over node_api.h, no LibTorch and no C++ runtime: it loads wherever Node runs.
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>
#include <node_api.h>

// Bind to the oldest dlopen/dlerror (glibc < 2.34 keeps them in libdl; 2.34+ still exports these
// versions), so the shim loads on older-glibc clusters whose users build the addon themselves
#if defined(__GLIBC__) && defined(__x86_64__)
__asm__(".symver dlopen,dlopen@GLIBC_2.2.5");
__asm__(".symver dlerror,dlerror@GLIBC_2.2.5");
#endif

#define CHECK(call)                                                            \
  do {                                                                         \
    if ((call) != napi_ok) {                                                   \
      napi_throw_error(env, "ERR_INTERNAL", "fisherlens shim: " #call " failed"); \
      return NULL;                                                             \
    }                                                                          \
  } while (0)

// load(file: string): undefined. Opens file with RTLD_NOW | RTLD_GLOBAL (as Python's torch opens
// its global deps); throws an Error with code ERR_LOAD carrying dlerror()'s message on failure.
static napi_value Load(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  napi_valuetype type = napi_undefined;
  if (argc >= 1) CHECK(napi_typeof(env, argv[0], &type));
  if (type != napi_string) {
    napi_throw_type_error(env, "ERR_ARG", "fisherlens shim: load(file) expects an absolute path string");
    return NULL;
  }
  size_t len = 0;
  CHECK(napi_get_value_string_utf8(env, argv[0], NULL, 0, &len));
  char* file = malloc(len + 1);
  if (file == NULL) {
    napi_throw_error(env, "ERR_MEMORY", "fisherlens shim: out of memory");
    return NULL;
  }
  napi_get_value_string_utf8(env, argv[0], file, len + 1, &len);
  if (file[0] != '/') {
    free(file);
    napi_throw_error(env, "ERR_ARG", "fisherlens shim: load(file) expects an absolute path");
    return NULL;
  }
  void* handle = dlopen(file, RTLD_NOW | RTLD_GLOBAL);
  free(file);
  if (handle == NULL) {
    const char* why = dlerror();
    napi_throw_error(env, "ERR_LOAD", why ? why : "dlopen failed");
    return NULL;
  }
  return NULL;  // the handle is deliberately leaked: never dlclose LibTorch
}

NAPI_MODULE_INIT() {
  napi_value fn;
  CHECK(napi_create_function(env, "load", NAPI_AUTO_LENGTH, Load, NULL, &fn));
  CHECK(napi_set_named_property(env, exports, "load", fn));
  return exports;
}
