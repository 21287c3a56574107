// data: dataset readers (IDX, CIFAR binary, NumPy .npy), synthetic sets and CIFAR augmentation;
// see lib/data/index.ts for the public API.
// Every reader returns images float32 [N, C, H, W] in [0, 1] and labels int64 [N]; a bad file is
// ERR_FORMAT naming the file and what was wrong, a missing one ERR_IO.
// The ops' glue is binding/data.cc; whole-file reading and gunzip, common/file_bytes.h.
#include "data.h"
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <cstring>
#include <fstream>
#include <random>
#include "common/checks.h"
#include "common/errors.h"
#include "common/file_bytes.h"
#include "common/tensor_ops.h"

namespace fl {
namespace {

uint32_t be32(const uint8_t* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | uint32_t(p[3]);
}

struct Idx {
  Bytes bytes;
  size_t offset = 0;  // of the data
  std::vector<int64_t> dims;
  const uint8_t* data() const { return bytes.data() + offset; }
};

// IDX (LeCun's MNIST format): magic 0x0000, dtype 0x08 (ubyte), ndim; ndim big-endian uint32
// sizes; then the data.
Idx readIdx(const std::string& path, int expectDims, const char* role) {
  Bytes b = readMaybeGz(path);
  FL_CHECK(b.size() >= 4, ERR_FORMAT, "'", path, "': not an IDX file (", b.size(), " bytes; an IDX header has at least 4)");
  FL_CHECK(b[0] == 0 && b[1] == 0, ERR_FORMAT, "'", path, "': not an IDX file (magic bytes ", int(b[0]), " ", int(b[1]),
           ", expected 0 0)");
  FL_CHECK(b[2] == 0x08, ERR_FORMAT, "'", path, "': IDX data type 0x", std::hex, int(b[2]), std::dec,
           " is not supported; expected 0x08 (unsigned bytes)");
  int nd = b[3];
  FL_CHECK(nd == expectDims, ERR_FORMAT, "'", path, "': expected an IDX ", role, " file with ", expectDims,
           " dimensions, got ", nd);
  size_t hdr = 4 + 4 * size_t(nd);
  FL_CHECK(b.size() >= hdr, ERR_FORMAT, "'", path, "': truncated IDX header (", b.size(), " bytes, need ", hdr, ")");
  std::vector<int64_t> dims;
  uint64_t total = 1;
  for (int i = 0; i < nd; ++i) {
    uint32_t d = be32(b.data() + 4 + 4 * i);
    FL_CHECK(d > 0, ERR_FORMAT, "'", path, "': dimension ", i, " is 0");
    FL_CHECK(!__builtin_mul_overflow(total, uint64_t(d), &total) && total <= b.size(), ERR_FORMAT, "'", path, "': header declares more data than the file holds (",
             b.size() - hdr, " data bytes)");
    dims.push_back(d);
  }
  FL_CHECK(b.size() - hdr == total, ERR_FORMAT, "'", path, "': header declares ", total, " data bytes but the file has ",
           b.size() - hdr, b.size() - hdr < total ? " (truncated)" : " (extra bytes)");
  Idx r;
  r.bytes = std::move(b);
  r.offset = hdr;
  r.dims = dims;
  return r;
}

// uint8 pixels -> float32 / 255 in one pass, into `dims` (with a channel axis inserted by the caller)
torch::Tensor pixelsToFloat(const uint8_t* src, std::vector<int64_t> dims) {
  torch::Tensor out = torch::empty(dims, torch::kFloat32);
  float* dst = out.data_ptr<float>();
  const int64_t n = out.numel();
  at::parallel_for(0, n, 1 << 16, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) dst[i] = static_cast<float>(src[i]) / 255.0f;
  });
  return out;
}

// uint8 labels [N] -> int64, each checked against [0, numClasses)
torch::Tensor labelsFromBytes(const torch::Tensor& u8, int64_t numClasses, const std::string& path) {
  if (u8.numel() > 0) {
    int64_t hi = u8.max().item<int64_t>();
    FL_CHECK(hi < numClasses, ERR_FORMAT, "'", path, "': label ", hi, " is out of range; expected labels in [0, ",
             numClasses, ")");
  }
  return u8.to(torch::kInt64);
}

}  // namespace

LoadedData loadIdxPair(const std::string& imgPath, const std::string& lblPath, int64_t numClasses) {
  LoadedData r;
  Idx img = readIdx(imgPath, 3, "images");
  const int64_t n = img.dims[0];
  if (!lblPath.empty()) {
    Idx lbl = readIdx(lblPath, 1, "labels");
    FL_CHECK(lbl.dims[0] == n, ERR_FORMAT, "'", lblPath, "' has ", lbl.dims[0], " labels but '", imgPath, "' has ", n,
             " images");
    torch::Tensor u8 = torch::from_blob(const_cast<uint8_t*>(lbl.data()), {n}, torch::kUInt8);
    r.labels = labelsFromBytes(u8, numClasses, lblPath);  // a copy (int64)
  }
  r.images = pixelsToFloat(img.data(), {n, 1, img.dims[1], img.dims[2]});
  r.numClasses = numClasses;
  return r;
}

LoadedData loadCifar(const std::vector<std::string>& paths, int variant, bool coarse) {
  const size_t labelBytes = variant == 100 ? 2 : 1;
  const size_t rec = labelBytes + 3072;
  const int64_t numClasses = variant == 10 ? 10 : coarse ? 20 : 100;
  const size_t which = variant == 100 && !coarse ? 1 : 0;
  std::vector<torch::Tensor> imgs, lbls;
  for (const auto& path : paths) {
    Bytes b = readMaybeGz(path);
    FL_CHECK(!b.empty() && b.size() % rec == 0, ERR_FORMAT, "'", path, "': ", b.size(),
             " bytes is not a whole number of CIFAR-", variant, " records (", rec, " bytes each)");
    int64_t n = static_cast<int64_t>(b.size() / rec);
    torch::Tensor img = torch::empty({n, 3, 32, 32}, torch::kUInt8);
    torch::Tensor lbl = torch::empty({n}, torch::kInt64);
    uint8_t* ip = img.data_ptr<uint8_t>();
    int64_t* lp = lbl.data_ptr<int64_t>();
    for (int64_t i = 0; i < n; ++i) {
      const uint8_t* r = b.data() + i * rec;
      int64_t y = r[which];
      FL_CHECK(y < numClasses, ERR_FORMAT, "'", path, "': record ", i, " has label ", y, "; expected labels in [0, ",
               numClasses, ") for CIFAR-", variant, variant == 100 ? (coarse ? " (coarse)" : " (fine)") : "");
      if (variant == 100) {
        FL_CHECK(r[0] < 20, ERR_FORMAT, "'", path, "': record ", i, " has coarse label ", int(r[0]), "; expected [0, 20)");
      }
      lp[i] = y;
      std::memcpy(ip + i * 3072, r + labelBytes, 3072);
    }
    imgs.push_back(img);
    lbls.push_back(lbl);
  }
  LoadedData out;
  torch::Tensor u8 = imgs.size() == 1 ? imgs[0] : torch::cat(imgs);
  out.images = pixelsToFloat(u8.data_ptr<uint8_t>(), u8.sizes().vec());
  out.labels = torch::cat(lbls);
  out.numClasses = numClasses;
  return out;
}

namespace {

// ---------- NumPy .npy ----------
// Format: "\x93NUMPY", major, minor, header length (uint16 for v1, uint32 for v2/3), then a Python
// dict literal {'descr': '<f4', 'fortran_order': False, 'shape': (N, ...), } padded with spaces.

struct NpyHeader {
  std::string descr;
  bool fortran = false;
  std::vector<int64_t> shape;
};

std::string npyValue(const std::string& h, const std::string& key, const std::string& path) {
  size_t k = h.find("'" + key + "'");
  FL_CHECK(k != std::string::npos, ERR_FORMAT, "'", path, "': .npy header has no '", key, "' entry");
  size_t c = h.find(':', k);
  FL_CHECK(c != std::string::npos, ERR_FORMAT, "'", path, "': malformed .npy header near '", key, "'");
  size_t s = h.find_first_not_of(' ', c + 1);
  FL_CHECK(s != std::string::npos, ERR_FORMAT, "'", path, "': malformed .npy header near '", key, "'");
  size_t e;
  if (h[s] == '\'') {
    e = h.find('\'', s + 1);
    FL_CHECK(e != std::string::npos, ERR_FORMAT, "'", path, "': malformed .npy header near '", key, "'");
    return h.substr(s + 1, e - s - 1);
  }
  if (h[s] == '(') {
    e = h.find(')', s);
    FL_CHECK(e != std::string::npos, ERR_FORMAT, "'", path, "': malformed .npy header near '", key, "'");
    return h.substr(s, e - s + 1);
  }
  e = h.find_first_of(",}", s);
  FL_CHECK(e != std::string::npos, ERR_FORMAT, "'", path, "': malformed .npy header near '", key, "'");
  return h.substr(s, e - s);
}

NpyHeader parseNpyHeader(const std::string& h, const std::string& path) {
  NpyHeader r;
  r.descr = npyValue(h, "descr", path);
  std::string fo = npyValue(h, "fortran_order", path);
  while (!fo.empty() && fo.back() == ' ') fo.pop_back();
  FL_CHECK(fo == "False" || fo == "True", ERR_FORMAT, "'", path, "': .npy fortran_order must be True or False, got '", fo, "'");
  r.fortran = fo == "True";
  std::string sh = npyValue(h, "shape", path);
  FL_CHECK(sh.size() >= 2 && sh.front() == '(' && sh.back() == ')', ERR_FORMAT, "'", path, "': malformed .npy shape '", sh, "'");
  std::string inner = sh.substr(1, sh.size() - 2);
  size_t i = 0;
  while (i < inner.size()) {
    while (i < inner.size() && (inner[i] == ' ' || inner[i] == ',')) ++i;
    if (i >= inner.size()) break;
    size_t j = i;
    while (j < inner.size() && inner[j] >= '0' && inner[j] <= '9') ++j;
    FL_CHECK(j > i && j - i <= 12, ERR_FORMAT, "'", path, "': malformed .npy shape '", sh, "'");
    r.shape.push_back(std::stoll(inner.substr(i, j - i)));
    i = j;
    while (i < inner.size() && inner[i] == 'L') ++i;  // Python 2 longs
  }
  return r;
}

// Reads an .npy file (C order; little-endian or single-byte types) into a tensor of its dtype.
torch::Tensor readNpy(const std::string& path) {
  Bytes b = readMaybeGz(path);
  static const uint8_t magic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
  FL_CHECK(b.size() >= 10 && std::memcmp(b.data(), magic, 6) == 0, ERR_FORMAT, "'", path,
           "': not a NumPy .npy file (missing the \\x93NUMPY magic)");
  int major = b[6];
  FL_CHECK(major >= 1 && major <= 3, ERR_FORMAT, "'", path, "': unsupported .npy version ", major, ".", int(b[7]));
  size_t hlen, hstart;
  if (major == 1) {
    hlen = b[8] | (size_t(b[9]) << 8);
    hstart = 10;
  } else {
    FL_CHECK(b.size() >= 12, ERR_FORMAT, "'", path, "': truncated .npy header");
    hlen = b[8] | (size_t(b[9]) << 8) | (size_t(b[10]) << 16) | (size_t(b[11]) << 24);
    hstart = 12;
  }
  FL_CHECK(b.size() >= hstart + hlen, ERR_FORMAT, "'", path, "': truncated .npy header (", b.size(), " bytes, header needs ",
           hstart + hlen, ")");
  std::string h(reinterpret_cast<const char*>(b.data() + hstart), hlen);
  NpyHeader nh = parseNpyHeader(h, path);
  FL_CHECK(!nh.fortran, ERR_FORMAT, "'", path, "': Fortran-order arrays are not supported; save with np.ascontiguousarray(a)");
  struct Row { const char* d; torch::ScalarType st; size_t size; };
  static const Row rows[] = {
      {"<f4", torch::kFloat32, 4}, {"<f8", torch::kFloat64, 8}, {"|u1", torch::kUInt8, 1}, {"<u1", torch::kUInt8, 1},
      {"<i8", torch::kInt64, 8},   {"<i4", torch::kInt32, 4},   {"|i1", torch::kInt8, 1},  {"<i2", torch::kInt16, 2},
      {"|b1", torch::kBool, 1},
  };
  const Row* row = nullptr;
  for (const auto& r : rows)
    if (nh.descr == r.d) row = &r;
  FL_CHECK(row != nullptr, ERR_FORMAT, "'", path, "': .npy dtype '", nh.descr,
           "' is not supported; expected float32 (<f4), float64 (<f8), uint8 (|u1) or int64 (<i8) in little-endian order");
  uint64_t n = 1;
  for (int64_t d : nh.shape) {
    FL_CHECK(!__builtin_mul_overflow(n, static_cast<uint64_t>(d), &n) && n <= b.size(), ERR_FORMAT, "'", path, "': shape declares more data than the file holds");
  }
  size_t data = hstart + hlen;
  FL_CHECK(b.size() - data == n * row->size, ERR_FORMAT, "'", path, "': shape ", c10::IntArrayRef(nh.shape), " of ",
           nh.descr, " needs ", n * row->size, " data bytes, the file has ", b.size() - data,
           b.size() - data < n * row->size ? " (truncated)" : " (extra bytes)");
  torch::Tensor t = torch::empty(nh.shape, row->st);
  if (n) std::memcpy(t.data_ptr(), b.data() + data, n * row->size);
  return t;
}

// Images from an .npy array: [N, H, W] (one channel), [N, C, H, W] with C in {1, 3} or
// [N, H, W, C] with C in {1, 3, 4} (channels last, moved first). uint8 is divided by 255; float
// values must already lie in [0, 1].
torch::Tensor npyImages(const torch::Tensor& a, const std::string& path) {
  FL_CHECK(a.scalar_type() == torch::kFloat32 || a.scalar_type() == torch::kFloat64 || a.scalar_type() == torch::kUInt8,
           ERR_FORMAT, "'", path, "': images must be float32, float64 or uint8, got ", c10::toString(a.scalar_type()));
  torch::Tensor x;
  if (a.dim() == 3) {
    x = a.unsqueeze(1);
  } else if (a.dim() == 4) {
    bool cFirst = a.size(1) == 1 || a.size(1) == 3;
    bool cLast = a.size(3) == 1 || a.size(3) == 3 || a.size(3) == 4;
    FL_CHECK(cFirst || cLast, ERR_FORMAT, "'", path, "': cannot tell the channel axis of images ", a.sizes(),
             "; expected [N, C, H, W] with C = 1 or 3, or [N, H, W, C] with C = 1, 3 or 4");
    x = cFirst ? a : a.permute({0, 3, 1, 2});
  } else {
    throw FlError(ERR_FORMAT, fl::str("'", path, "': images must be [N, H, W], [N, C, H, W] or [N, H, W, C], got shape ", a.sizes()));
  }
  FL_CHECK(x.size(0) > 0, ERR_FORMAT, "'", path, "': no images (N = 0)");
  if (a.scalar_type() == torch::kUInt8) return x.to(torch::kFloat32).div_(255.0f).contiguous();
  x = x.to(torch::kFloat32).contiguous();
  FL_CHECK(torch::isfinite(x).all().item<bool>(), ERR_FORMAT, "'", path, "': images contain NaN or Inf");
  double lo = x.min().item<double>(), hi = x.max().item<double>();
  FL_CHECK(lo >= 0 && hi <= 1, ERR_FORMAT, "'", path, "': float images must lie in [0, 1] (pixels), got values in [", lo,
           ", ", hi, "]; divide 0..255 data by 255");
  return x;
}

// Labels from an .npy array [N] of an integer type, all >= 0
torch::Tensor npyLabels(const torch::Tensor& a, const std::string& path) {
  FL_CHECK(a.dim() == 1, ERR_FORMAT, "'", path, "': labels must be a 1-D array [N], got shape ", a.sizes());
  FL_CHECK(!a.is_floating_point() && a.scalar_type() != torch::kBool, ERR_FORMAT, "'", path,
           "': labels must be integers (int64, int32, uint8), got ", c10::toString(a.scalar_type()));
  torch::Tensor y = a.to(torch::kInt64);
  if (y.numel()) {
    int64_t lo = y.min().item<int64_t>();
    FL_CHECK(lo >= 0, ERR_FORMAT, "'", path, "': label ", lo, " is out of range; labels must be >= 0");
  }
  return y;
}

}  // namespace

NpyRole parseNpyRole(const std::string& role) {
  FL_CHECK(role == "images" || role == "labels" || role == "raw", ERR_ARG, "loadNpy: role must be images, labels or raw");
  return role == "images" ? NpyRole::Images : role == "labels" ? NpyRole::Labels : NpyRole::Raw;
}

torch::Tensor loadNpy(const std::string& path, NpyRole role) {
  torch::Tensor t = readNpy(path);
  if (role == NpyRole::Images) return npyImages(t, path);
  if (role == NpyRole::Labels) return npyLabels(t, path);
  return t;
}

int64_t appendNpy(const std::string& path, const torch::Tensor& t) {
  FL_CHECK(t.is_floating_point(), ERR_DTYPE, "appendNpy(tensor): expected a float tensor, got ", dtypeName(t.scalar_type()));
  torch::Tensor f = t.detach().to(torch::kCPU, torch::kFloat32).contiguous();
  std::ofstream out(path, std::ios::binary | std::ios::app);
  FL_CHECK(out.is_open(), ERR_IO, "cannot append to '", path, "'");
  out.write(reinterpret_cast<const char*>(f.data_ptr<float>()), static_cast<std::streamsize>(f.numel() * sizeof(float)));
  out.close();
  FL_CHECK(!out.fail(), ERR_IO, "writing '", path, "' failed (disk full?)");
  return f.numel();
}

LoadedData synthetic(const std::string& kind, int64_t n, int64_t k, int64_t c, int64_t s, double noise, double margin, uint64_t seed) {
  FL_CHECK(kind == "gaussian" || kind == "linear", ERR_ARG, "synthetic: unknown kind '", kind, "'; expected gaussian or linear");
  FL_CHECK(n > 0 && k >= 2 && c > 0 && s > 0, ERR_ARG, "synthetic: need n > 0, numClasses >= 2, channels > 0, size > 0");
  auto gen = at::detail::createCPUGenerator(seed);
  const int64_t D = c * s * s;
  auto f = torch::TensorOptions().dtype(torch::kFloat32);
  LoadedData r;
  r.numClasses = k;
  if (kind == "gaussian") {
    torch::Tensor means = torch::rand({k, D}, gen, f) * 0.5 + 0.25;
    r.labels = torch::randint(0, k, {n}, gen, torch::TensorOptions().dtype(torch::kInt64));
    torch::Tensor x = means.index_select(0, r.labels) + noise * torch::randn({n, D}, gen, f);
    r.images = x.clamp_(0, 1).view({n, c, s, s}).contiguous();
  } else {
    torch::Tensor W = torch::randn({k, D}, gen, f) / std::sqrt(double(D));
    std::vector<torch::Tensor> xs, ys;
    int64_t have = 0;
    for (int tries = 0; have < n && tries < 1000; ++tries) {
      torch::Tensor x = torch::rand({std::max<int64_t>(n, 64), D}, gen, f);
      torch::Tensor z = torch::matmul(x - 0.5, W.t());
      auto top = z.topk(2, 1);
      torch::Tensor keep = (std::get<0>(top).select(1, 0) - std::get<0>(top).select(1, 1)) >= margin;
      torch::Tensor xk = x.index({keep}), yk = std::get<1>(top).select(1, 0).index({keep});
      xs.push_back(xk);
      ys.push_back(yk);
      have += xk.size(0);
    }
    FL_CHECK(have >= n, ERR_ARG, "synthetic linear: margin ", margin, " is too large for ", k, " classes in ", D, " dimensions");
    r.images = torch::cat(xs).narrow(0, 0, n).view({n, c, s, s}).contiguous();
    r.labels = torch::cat(ys).narrow(0, 0, n).contiguous();
  }
  return r;
}

// ---------- CIFAR augmentation (data.h; also training's, train.cc) ----------
torch::Tensor augment(const torch::Tensor& x, uint64_t seed, int64_t pad, bool flip) {
  checkImages(x, "augment(x)");
  FL_CHECK(pad >= 0, ERR_ARG, "augment: pad must be >= 0, got ", pad);
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  torch::NoGradGuard ng;
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int64_t> off(0, 2 * pad);
  struct Draw { int64_t dy, dx; bool mirror; };
  std::vector<Draw> draws(B);
  for (auto& d : draws) {
    d.dy = off(rng);
    d.dx = off(rng);
    d.mirror = flip && (rng() & 1);
  }
  if (x.device().is_cpu() && x.scalar_type() == torch::kFloat32) {
    // direct kernel: out[b, c, r, j] = x[b, c, r + dy − pad, (mirror ? W−1−j : j) + dx − pad], 0 outside
    torch::Tensor xc = x.contiguous();
    torch::Tensor out = torch::empty({B, C, H, W}, x.options());
    const float* src = xc.data_ptr<float>();
    float* dst = out.data_ptr<float>();
    at::parallel_for(0, B, 16, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const Draw& d = draws[b];
        for (int64_t c = 0; c < C; ++c) {
          const float* plane = src + ((b * C + c) * H) * W;
          float* o = dst + ((b * C + c) * H) * W;
          for (int64_t r = 0; r < H; ++r, o += W) {
            int64_t sr = r + d.dy - pad;
            if (sr < 0 || sr >= H) {
              std::fill(o, o + W, 0.0f);
              continue;
            }
            const float* row = plane + sr * W;
            for (int64_t j = 0; j < W; ++j) {
              int64_t sc = (d.mirror ? W - 1 - j : j) + d.dx - pad;
              o[j] = sc >= 0 && sc < W ? row[sc] : 0.0f;
            }
          }
        }
      }
    });
    return out;
  }
  // any other dtype / device: the same crops with tensor ops
  torch::Tensor p = pad > 0 ? torch::constant_pad_nd(x, {pad, pad, pad, pad}, 0) : x;
  torch::Tensor out = torch::empty_like(x, x.options().memory_format(torch::MemoryFormat::Contiguous));
  for (int64_t i = 0; i < B; ++i) {
    torch::Tensor crop = p[i].narrow(1, draws[i].dy, H).narrow(2, draws[i].dx, W);
    out[i].copy_(draws[i].mirror ? crop.flip({2}) : crop);
  }
  return out;
}

}  // namespace fl
