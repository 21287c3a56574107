// Shape errors that name what the model expects against what it got (classifier.h InputShape):
// a forward that fails inside LibTorch or the TorchScript interpreter, with a shape mismatch, on
// an input of the wrong [C, H, W] is ERR_SHAPE "expects [B, C, H, W] (source), got [...]", the interpreter's text only
// as the trailing detail.
#include "models/classifier.h"
#include "common/errors.h"
#include <c10/util/Exception.h>

namespace fl {

std::string shapeText(torch::IntArrayRef s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

namespace {

// The line of a LibTorch / TorchScript message that says what failed: the interpreter puts two
// tracebacks first and "RuntimeError: <what>" last.
std::string lastLine(const std::string& msg) {
  size_t end = msg.find_last_not_of(" \n\r\t");
  if (end == std::string::npos) return msg;
  size_t start = msg.rfind('\n', end);
  std::string line = msg.substr(start == std::string::npos ? 0 : start + 1, end + 1 - (start == std::string::npos ? 0 : start + 1));
  const std::string rt = "RuntimeError: ";
  if (line.compare(0, rt.size(), rt) == 0) line = line.substr(rt.size());
  return line;
}

// Whether LibTorch words a failure as a shape mismatch ("mat1 and mat2 shapes cannot be
// multiplied", "expected input[...] to have 1 channels", "size mismatch", ...); never an
// allocation failure (CUDA's names max_split_size_mb)
bool soundsLikeShape(const std::string& m) {
  if (m.find("out of memory") != std::string::npos || m.find("allocate memory") != std::string::npos) return false;
  return m.find("shape") != std::string::npos || m.find("size") != std::string::npos ||
         m.find("dimension") != std::string::npos || m.find("channels") != std::string::npos;
}

}  // namespace

torch::Tensor forwardNamingShape(InputShape& known, const torch::Tensor& x, const std::string& what,
                                 const std::function<torch::Tensor()>& fn) {
  std::string msg;
  std::exception_ptr ep;
  try {
    torch::Tensor z = fn();
    if (known.chw.empty() && x.dim() == 4) {
      known.chw = {x.size(1), x.size(2), x.size(3)};
      known.source = "the shape of its first successful forward";
    }
    return z;
  } catch (const FlError& e) {
    if (e.code != ERR_SHAPE) throw;  // aborts, device and value errors are not about the input's shape
    msg = e.what();
    ep = std::current_exception();
  } catch (const c10::Error& e) {
    msg = e.what_without_backtrace();
    ep = std::current_exception();
  } catch (const std::bad_alloc&) {
    throw;
  } catch (const std::exception& e) {  // the TorchScript interpreter's failures (torch::jit::JITException)
    msg = e.what();
    ep = std::current_exception();
  }
  const std::string detail = lastLine(msg);
  // a failure of another kind (memory, device, values) stays what it is, whatever the shape
  if (!known.chw.empty() && x.dim() == 4 && soundsLikeShape(detail)) {
    const std::vector<int64_t> got{x.size(1), x.size(2), x.size(3)};
    if (got != known.chw) {
      throw FlError(ERR_SHAPE, str(what, " expects input [B, ", known.chw[0], ", ", known.chw[1], ", ", known.chw[2], "] (",
                                   known.source, "), got ", shapeText(x.sizes()), " (", detail, ")"));
    }
  }
  if (known.chw.empty() && soundsLikeShape(detail)) {
    throw FlError(ERR_SHAPE, str(what, " cannot take input ", shapeText(x.sizes()),
                                 " (its expected input shape is not recorded and it has not yet run; ", detail, ")"));
  }
  // the expected shape came, or nothing says it is the shape: the failure as it was
  std::rethrow_exception(ep);
}

}  // namespace fl
