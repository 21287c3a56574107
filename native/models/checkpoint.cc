// checkpoint: versioned single-file checkpoints (see checkpoint.h for the format); the ops' glue is
// binding/checkpoint.cc, the public API lib/model.ts (Model.save, Model.loadCheckpoint, model.loadState).
#include "models/checkpoint.h"
#include "common/errors.h"
#include <ATen/CPUGeneratorImpl.h>
#include <nlohmann/json.hpp>
#include "models/exported.h"
#include <zlib.h>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <atomic>
#include <map>
#include <sstream>
#include <unistd.h>

namespace fl {

// Key of a parameter in an optimizer's state map: LibTorch 1.x keys by the TensorImpl address as
// text, 2.x by the address itself; both are derived from the same pointer.
template <typename Map>
static auto optimizerStateKey(const Map&, const torch::Tensor& p) {
  using Key = typename Map::key_type;
  if constexpr (std::is_same_v<Key, std::string>)
    return Key(c10::str(p.unsafeGetTensorImpl()));
  else
    return static_cast<Key>(p.unsafeGetTensorImpl());
}

namespace {

// Archive key of the i-th tensor: "t<i>". Appended, not "t" + std::to_string(i): GCC 12 at -O3
// under C++20 (LibTorch >= 2.14) warns a false -Wstringop-overflow inside that operator+.
std::string tensorKey(size_t i) {
  std::string k = "t";
  k += std::to_string(i);
  return k;
}

constexpr char kMagic[6] = {'F', 'L', 'C', 'K', 'P', 'T'};
constexpr size_t kHeader = 6 + 2 + 8 + 4;

void putLe(std::string& s, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) s.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
uint64_t getLe(const unsigned char* p, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

uint32_t crc(const char* data, size_t n) {
  uLong c = crc32(0L, Z_NULL, 0);
  while (n > 0) {
    uInt k = static_cast<uInt>(std::min<size_t>(n, 1u << 30));
    c = crc32(c, reinterpret_cast<const Bytef*>(data), k);
    data += k;
    n -= k;
  }
  return static_cast<uint32_t>(c);
}

// Parsed checkpoint contents (everything but the model)
struct Parsed {
  uint16_t version = 0;
  std::string spec, kind, meta;
  std::vector<std::string> names;
  std::vector<torch::Tensor> tensors;
  torch::Tensor rng;
  bool hasOptimizer = false;
  std::shared_ptr<torch::serialize::InputArchive> archive;
};

std::string readIValueString(torch::serialize::InputArchive& ar, const char* key, const std::string& path) {
  c10::IValue v;
  FL_CHECK(ar.try_read(key, v) && v.isString(), ERR_FORMAT, "checkpoint '", path, "': missing or malformed entry '", key, "'");
  return v.toStringRef();
}

Parsed readCheckpoint(const std::string& path, const torch::Device& device) {
  std::string buf;
  {
    std::ifstream f(path, std::ios::binary);
    FL_CHECK(f.good(), ERR_IO, "cannot open checkpoint '", path, "': no such file or not readable");
    std::ostringstream ss;
    ss << f.rdbuf();
    buf = ss.str();
  }
  const auto* u = reinterpret_cast<const unsigned char*>(buf.data());
  FL_CHECK(buf.size() >= 6 && std::memcmp(buf.data(), kMagic, 6) == 0, ERR_FORMAT, "'", path,
           "' is not a FisherLens checkpoint (no FLCKPT magic)");
  FL_CHECK(buf.size() >= kHeader, ERR_FORMAT, "checkpoint '", path, "' is truncated (", buf.size(), " bytes, header needs ",
           kHeader, ")");
  Parsed p;
  p.version = static_cast<uint16_t>(getLe(u + 6, 2));
  FL_CHECK(p.version >= 1 && p.version <= kCheckpointVersion, ERR_FORMAT, "checkpoint '", path, "' has format version ",
           p.version, "; this FisherLens reads versions 1..", kCheckpointVersion);
  uint64_t len = getLe(u + 8, 8);
  uint32_t want = static_cast<uint32_t>(getLe(u + 16, 4));
  FL_CHECK(buf.size() - kHeader == len, ERR_FORMAT, "checkpoint '", path, "' is ",
           buf.size() - kHeader < len ? "truncated" : "longer than its header says", " (payload ", buf.size() - kHeader,
           " bytes, header says ", len, ")");
  FL_CHECK(crc(buf.data() + kHeader, len) == want, ERR_FORMAT, "checkpoint '", path, "' is corrupted (CRC-32 mismatch)");
  p.archive = std::make_shared<torch::serialize::InputArchive>();
  try {
    p.archive->load_from(buf.data() + kHeader, len, device);
    torch::serialize::InputArchive& ar = *p.archive;
    p.spec = readIValueString(ar, "spec", path);
    p.kind = readIValueString(ar, "kind", path);
    p.meta = readIValueString(ar, "meta", path);
    c10::IValue names;
    FL_CHECK(ar.try_read("names", names) && names.isList(), ERR_FORMAT, "checkpoint '", path, "': missing tensor names");
    for (const auto& n : names.toListRef()) {
      FL_CHECK(n.isString(), ERR_FORMAT, "checkpoint '", path, "': malformed tensor names");
      p.names.push_back(n.toStringRef());
    }
    torch::serialize::InputArchive state;
    FL_CHECK(ar.try_read("state", state), ERR_FORMAT, "checkpoint '", path, "': missing the weights");
    for (size_t i = 0; i < p.names.size(); ++i) {
      torch::Tensor t;
      FL_CHECK(state.try_read(tensorKey(i), t, /*is_buffer=*/true), ERR_FORMAT, "checkpoint '", path,
               "': missing the tensor of '", p.names[i], "'");
      p.tensors.push_back(t);
    }
    ar.try_read("rng", p.rng, /*is_buffer=*/true);
    c10::IValue hasOpt;
    p.hasOptimizer = ar.try_read("hasOptimizer", hasOpt) && hasOpt.isBool() && hasOpt.toBool();
  } catch (const FlError&) {
    throw;
  } catch (const c10::Error& e) {
    throw FlError(ERR_FORMAT, fl::str("checkpoint '", path, "' could not be read: ", e.what_without_backtrace()));
  }
  return p;
}

// Checks names, shapes and dtypes of `p` against `m`, then copies (nothing changes on a mismatch)
void applyState(const Parsed& p, Classifier& m, const std::string& path) {
  auto target = m.namedState();
  std::map<std::string, size_t> have;
  for (size_t i = 0; i < p.names.size(); ++i) have[p.names[i]] = i;
  FL_CHECK(have.size() == p.names.size(), ERR_FORMAT, "checkpoint '", path, "': duplicate tensor names");
  std::vector<std::pair<torch::Tensor, torch::Tensor>> copies;
  for (auto& [name, dst] : target) {
    auto it = have.find(name);
    FL_CHECK(it != have.end(), ERR_FORMAT, "checkpoint '", path, "' does not match the model: it has no '", name, "'");
    const torch::Tensor& src = p.tensors[it->second];
    FL_CHECK(src.sizes() == dst.sizes(), ERR_FORMAT, "checkpoint '", path, "' does not match the model: '", name,
             "' has shape ", src.sizes(), " in the file, the model expects ", dst.sizes());
    FL_CHECK(src.scalar_type() == dst.scalar_type(), ERR_FORMAT, "checkpoint '", path, "' does not match the model: '",
             name, "' is ", c10::toString(src.scalar_type()), " in the file, the model expects ",
             c10::toString(dst.scalar_type()));
    copies.emplace_back(dst, src);
  }
  FL_CHECK(target.size() == p.names.size(), ERR_FORMAT, "checkpoint '", path, "' does not match the model: it holds ",
           p.names.size(), " tensors, the model has ", target.size());
  torch::NoGradGuard ng;
  for (auto& [dst, src] : copies) dst.copy_(src);
}

}  // namespace

torch::Tensor cpuRngState() {
  at::Generator gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  return gen.get_state();
}

void setCpuRngState(const torch::Tensor& state) {
  at::Generator gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(state);
}

void saveCheckpoint(const std::string& path, Classifier& m, const std::string& metaJson,
                    const std::function<void(torch::serialize::OutputArchive&)>& writeOptimizer) {
  FL_CHECK(nlohmann::json::accept(metaJson), ERR_ARG, "saveCheckpoint: meta must be valid JSON");
  torch::serialize::OutputArchive ar;
  ar.write("spec", c10::IValue(m.specJson()));
  ar.write("kind", c10::IValue(m.kind()));
  ar.write("meta", c10::IValue(metaJson));
  c10::List<std::string> names;
  torch::serialize::OutputArchive state;
  int64_t i = 0;
  for (auto& [name, t] : m.namedState()) {
    names.push_back(name);
    state.write(tensorKey(i++), t.detach().to(torch::kCPU).contiguous(), /*is_buffer=*/true);
  }
  ar.write("names", c10::IValue(names));
  ar.write("state", state);
  ar.write("rng", cpuRngState(), /*is_buffer=*/true);
  bool hasOpt = static_cast<bool>(writeOptimizer);
  if (hasOpt) {
    torch::serialize::OutputArchive opt;
    writeOptimizer(opt);
    ar.write("optimizer", opt);
  }
  ar.write("hasOptimizer", c10::IValue(hasOpt));
  std::ostringstream os;
  ar.save_to(os);
  const std::string payload = os.str();
  std::string header(kMagic, 6);
  putLe(header, kCheckpointVersion, 2);
  putLe(header, payload.size(), 8);
  putLe(header, crc(payload.data(), payload.size()), 4);

  // unique per process and call: two saves of one path never share a temporary file
  static std::atomic<uint64_t> counter{0};
  const std::string tmp = path + ".tmp-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
  FILE* f = std::fopen(tmp.c_str(), "wb");
  FL_CHECK(f != nullptr, ERR_IO, "cannot write checkpoint '", tmp, "': ", std::strerror(errno));
  bool ok = std::fwrite(header.data(), 1, header.size(), f) == header.size() &&
            std::fwrite(payload.data(), 1, payload.size(), f) == payload.size() && std::fflush(f) == 0 &&
            ::fsync(fileno(f)) == 0;
  int err = errno;
  ok = (std::fclose(f) == 0) && ok;
  if (!ok) {
    std::remove(tmp.c_str());
    throw FlError(ERR_IO, fl::str("cannot write checkpoint '", tmp, "': ", std::strerror(err)));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    err = errno;
    std::remove(tmp.c_str());
    throw FlError(ERR_IO, fl::str("cannot rename '", tmp, "' to '", path, "': ", std::strerror(err)));
  }
}

LoadedCheckpoint loadCheckpoint(const std::string& path, const torch::Device& device, bool restoreRng) {
  Parsed p = readCheckpoint(path, torch::Device(torch::kCPU));
  LoadedCheckpoint out;
  if (p.kind == "builtin") {
    try {
      out.model = createBuiltin(p.spec);
    } catch (const FlError& e) {
      throw FlError(ERR_FORMAT, fl::str("checkpoint '", path, "' holds a spec this FisherLens cannot build: ", e.what()));
    }
  } else if (p.kind == "torchscript") {
    nlohmann::json j = nlohmann::json::parse(p.spec, nullptr, false);
    FL_CHECK(j.is_object() && j.contains("path") && j["path"].is_string(), ERR_FORMAT, "checkpoint '", path,
             "': a TorchScript checkpoint needs the archive's path in its spec");
    out.model = loadTorchScript(j["path"].get<std::string>(), torch::Device(torch::kCPU));
  } else if (p.kind == "exported") {
    try {
      out.model = createExported(p.spec);
    } catch (const FlError& e) {
      throw FlError(ERR_FORMAT, fl::str("checkpoint '", path, "' holds an exported program this FisherLens cannot run: ", e.what()));
    }
  } else {
    throw FlError(ERR_FORMAT, fl::str("checkpoint '", path, "': unknown model kind '", p.kind, "'"));
  }
  applyState(p, *out.model, path);
  if (!device.is_cpu()) out.model->to(device);
  out.model->train(false);
  if (restoreRng) {
    FL_CHECK(p.rng.defined(), ERR_FORMAT, "checkpoint '", path, "' holds no generator state");
    try {
      setCpuRngState(p.rng);
    } catch (const c10::Error& e) {
      throw FlError(ERR_FORMAT, fl::str("checkpoint '", path, "': bad generator state: ", e.what_without_backtrace()));
    }
  }
  out.metaJson = p.meta;
  out.archive = p.archive;
  out.hasOptimizer = p.hasOptimizer;
  out.version = p.version;
  out.rngState = p.rng;
  return out;
}

void loadCheckpointState(const std::string& path, Classifier& m) {
  Parsed p = readCheckpoint(path, torch::Device(torch::kCPU));
  applyState(p, m, path);
}

#ifdef FL_TEST_HOOKS
OptimizerSelfTest checkpointOptimizerSelfTest(Classifier& m, const std::string& path) {
  auto params = m.parameters();
  torch::optim::Adam opt(params, torch::optim::AdamOptions(1e-3));
  m.train(true);
  for (int s = 0; s < 2; ++s) {
    opt.zero_grad();
    torch::Tensor x = torch::rand({4, 1, 28, 28});
    m.forward(x).pow(2).mean().backward();
    opt.step();
  }
  m.train(false);
  saveCheckpoint(path, m, "{}", [&](torch::serialize::OutputArchive& a) { opt.save(a); });
  LoadedCheckpoint c = loadCheckpoint(path, torch::Device(torch::kCPU));
  torch::optim::Adam opt2(c.model->parameters(), torch::optim::AdamOptions(1e-3));
  torch::serialize::InputArchive sub;
  c.archive->read("optimizer", sub);
  opt2.load(sub);
  double maxDiff = 0;
  int64_t steps = -1;
  auto& p1 = opt.param_groups()[0].params();
  auto& p2 = opt2.param_groups()[0].params();
  for (size_t i = 0; i < p1.size(); ++i) {
    auto& s1 = static_cast<torch::optim::AdamParamState&>(*opt.state().at(optimizerStateKey(opt.state(), p1[i])));
    auto& s2 = static_cast<torch::optim::AdamParamState&>(*opt2.state().at(optimizerStateKey(opt2.state(), p2[i])));
    maxDiff = std::max({maxDiff, (s1.exp_avg() - s2.exp_avg()).abs().max().item<double>(),
                        (s1.exp_avg_sq() - s2.exp_avg_sq()).abs().max().item<double>(),
                        std::abs(double(s1.step() - s2.step()))});
    steps = s2.step();
  }
  return {c.hasOptimizer, steps, maxDiff};
}
#endif  // FL_TEST_HOOKS

}  // namespace fl
