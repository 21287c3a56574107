#include "common/errors.h"
#include <c10/util/Exception.h>

namespace fl {

void classifyError(std::exception_ptr ep, std::string& code, std::string& message) {
  try {
    std::rethrow_exception(ep);
  } catch (const FlError& e) {
    code = e.code;
    message = e.what();
  } catch (const c10::Error& e) {
    message = e.what_without_backtrace();
    // LibTorch's messages are the only classification it offers
    if (message.find("can't allocate memory") != std::string::npos || message.find("out of memory") != std::string::npos ||
        message.find("Cannot allocate memory") != std::string::npos)
      code = "ERR_MEMORY";
    else if (message.find("shape") != std::string::npos || message.find("size") != std::string::npos ||
        message.find("dimension") != std::string::npos)
      code = ERR_SHAPE;
    else if (message.find("dtype") != std::string::npos || message.find("scalar type") != std::string::npos ||
             message.find("Expected object of scalar type") != std::string::npos)
      code = ERR_DTYPE;
    else if (message.find("device") != std::string::npos || message.find("CUDA") != std::string::npos)
      code = ERR_DEVICE;
    else
      code = ERR_TORCH;
  } catch (const std::bad_alloc&) {
    code = "ERR_MEMORY";
    message = "out of memory";
  } catch (const std::exception& e) {
    code = ERR_TORCH;
    message = e.what();
  } catch (...) {
    code = ERR_TORCH;
    message = "unknown native error";
  }
}

}  // namespace fl
