// One error path: every failed check throws FlError (a code + a message saying what was
// expected and what came); startOp (binding/worker.h) turns it into a rejected Promise whose Error
// carries `code`. c10::Error and std::exception are classified by classifyError().
#pragma once
#include <stdexcept>
#include <string>
#include <sstream>

namespace fl {

// Error codes seen by JavaScript as `err.code`.
constexpr const char* ERR_SHAPE = "ERR_SHAPE";
constexpr const char* ERR_DTYPE = "ERR_DTYPE";
constexpr const char* ERR_DEVICE = "ERR_DEVICE";
constexpr const char* ERR_IO = "ERR_IO";
constexpr const char* ERR_FORMAT = "ERR_FORMAT";
constexpr const char* ERR_ABORTED = "ERR_ABORTED";
constexpr const char* ERR_ARG = "ERR_ARG";
constexpr const char* ERR_DISPOSED = "ERR_DISPOSED";
constexpr const char* ERR_VALUE = "ERR_VALUE";      // NaN / Inf / out-of-range values
constexpr const char* ERR_TORCH = "ERR_TORCH";      // an unclassified LibTorch failure
constexpr const char* ERR_INTERNAL = "ERR_INTERNAL"; // a broken internal invariant (a bug: please report it)

struct FlError : std::runtime_error {
  std::string code;
  FlError(std::string c, const std::string& msg) : std::runtime_error(msg), code(std::move(c)) {}
};

// Builds a message from streamable parts: fl::str("expected ", a, ", got ", b)
template <typename... Ts>
std::string str(const Ts&... parts) {
  std::ostringstream os;
  (os << ... << parts);
  return os.str();
}

// Classifies an exception into (code, message) without LibTorch's C++ backtrace.
void classifyError(std::exception_ptr ep, std::string& code, std::string& message);

}  // namespace fl

// FL_CHECK(cond, code, parts...): throw FlError(code, str(parts...)) when cond is false.
#define FL_CHECK(cond, code, ...)                         \
  do {                                                    \
    if (!(cond)) throw ::fl::FlError((code), ::fl::str(__VA_ARGS__)); \
  } while (0)
