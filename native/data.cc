// data: dataset readers (IDX, CIFAR binary, NumPy .npy), synthetic sets and CIFAR augmentation;
// see lib/data/index.ts for the public API.
// Every reader returns images float32 [N, C, H, W] in [0, 1] and labels int64 [N]; a bad file is
// ERR_FORMAT naming the file and what was wrong, a missing one ERR_IO.
#include "data.h"
#include "binding/init.h"
#include "common/checks.h"
#include "common/errors.h"
#include "binding/options.h"
#include "binding/tensor.h"
#include "binding/worker.h"
#include <zlib.h>
#include <cstring>
#include <cerrno>
#include <sys/stat.h>
#include <fstream>
#include <random>
#include <cstdlib>
#include <ATen/Parallel.h>

namespace fl {
namespace {

// A growable byte buffer without zero-filling (malloc/realloc): files are read straight into it.
class Bytes {
 public:
  Bytes() = default;
  Bytes(const Bytes&) = delete;
  Bytes& operator=(const Bytes&) = delete;
  Bytes(Bytes&& o) noexcept : p_(o.p_), n_(o.n_), cap_(o.cap_) { o.p_ = nullptr; o.n_ = o.cap_ = 0; }
  Bytes& operator=(Bytes&& o) noexcept {
    std::swap(p_, o.p_);
    std::swap(n_, o.n_);
    std::swap(cap_, o.cap_);
    return *this;
  }
  ~Bytes() { std::free(p_); }
  void reserve(size_t c) {
    if (c <= cap_) return;
    void* q = std::realloc(p_, c);
    if (!q) throw std::bad_alloc();
    p_ = static_cast<uint8_t*>(q);
    cap_ = c;
  }
  uint8_t* end() { return p_ + n_; }
  void grow(size_t k) { n_ += k; }
  size_t capacity() const { return cap_; }
  size_t size() const { return n_; }
  bool empty() const { return n_ == 0; }
  const uint8_t* data() const { return p_; }
  uint8_t operator[](size_t i) const { return p_[i]; }

 private:
  uint8_t* p_ = nullptr;
  size_t n_ = 0, cap_ = 0;
};

// Whole file, gunzipped when it starts with the gzip magic (zlib's gzread reads plain files as they
// are). The gzip trailer's size field presizes the buffer. Limit: 8 GiB uncompressed (a corrupt
// header cannot make us allocate without bound).
Bytes readMaybeGz(const std::string& path) {
  size_t guess = 1 << 16;
  {
    // a folder or a device is not a data file (std::ifstream opens a folder and reports a huge size)
    struct stat st;
    FL_CHECK(::stat(path.c_str(), &st) == 0, ERR_IO, "cannot open '", path, "': ", std::strerror(errno));
    FL_CHECK(S_ISREG(st.st_mode), ERR_IO, "'", path, "' is ", S_ISDIR(st.st_mode) ? "a folder" : "not a regular file",
             ", expected a data file");
    std::ifstream f(path, std::ios::binary | std::ios::ate);
    FL_CHECK(f.good(), ERR_IO, "cannot open '", path, "': no such file or not readable");
    size_t fsize = static_cast<size_t>(f.tellg());
    guess = fsize + 1;
    if (fsize >= 18) {
      unsigned char head[2], tail[4];
      f.seekg(0);
      f.read(reinterpret_cast<char*>(head), 2);
      f.seekg(static_cast<std::streamoff>(fsize - 4));
      f.read(reinterpret_cast<char*>(tail), 4);
      if (f.good() && head[0] == 0x1f && head[1] == 0x8b) {
        size_t isize = tail[0] | (size_t(tail[1]) << 8) | (size_t(tail[2]) << 16) | (size_t(tail[3]) << 24);
        guess = std::min<size_t>(std::max(isize + 1, fsize), size_t(1) << 32);
      }
    }
  }
  gzFile g = gzopen(path.c_str(), "rb");
  FL_CHECK(g != nullptr, ERR_IO, "cannot open '", path, "'");
  gzbuffer(g, 1 << 18);
  Bytes out;
  const size_t limit = size_t(8) << 30;
  try {
    out.reserve(guess);
    for (;;) {
      if (out.capacity() - out.size() < (1 << 16)) {
        FL_CHECK(out.size() < limit, ERR_FORMAT, "'", path, "': more than 8 GiB of data");
        out.reserve(out.capacity() * 2);
      }
      size_t room = std::min<size_t>(out.capacity() - out.size(), 1u << 30);
      int n = gzread(g, out.end(), static_cast<unsigned>(room));
      if (n < 0) {
        int err = 0;
        const char* msg = gzerror(g, &err);
        throw FlError(ERR_FORMAT, fl::str("'", path, "': corrupt or truncated gzip data (", msg ? msg : "zlib error", ")"));
      }
      out.grow(static_cast<size_t>(n));
      if (n == 0) break;
    }
    // gzread reports a truncated stream as EOF without error on some zlib versions: check too
    int err = 0;
    const char* msg = gzerror(g, &err);
    FL_CHECK(err == Z_OK || err == Z_STREAM_END, ERR_FORMAT, "'", path, "': corrupt or truncated gzip data (",
             msg ? msg : "zlib error", ")");
  } catch (...) {
    gzclose(g);
    throw;
  }
  int rc = gzclose(g);
  FL_CHECK(rc == Z_OK, ERR_FORMAT, "'", path, "': corrupt or truncated gzip data (",
           rc == Z_BUF_ERROR ? "unexpected end of file" : "bad gzip trailer", ")");
  return out;
}

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

struct Loaded {
  torch::Tensor images, labels;
  int64_t numClasses = 0;
};

// images [N, H, W] ubyte + labels [N] ubyte -> [N, 1, H, W] float32 / 255, int64
Loaded loadIdxPair(const std::string& imgPath, const std::string& lblPath, int64_t numClasses) {
  Loaded r;
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

// CIFAR binary: records of [label bytes][3072 bytes: 1024 R, 1024 G, 1024 B, row-major 32×32].
// CIFAR-10: 1 label byte; CIFAR-100: coarse then fine label byte.
Loaded loadCifar(const std::vector<std::string>& paths, int variant, bool coarse) {
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
  Loaded out;
  torch::Tensor u8 = imgs.size() == 1 ? imgs[0] : torch::cat(imgs);
  out.images = pixelsToFloat(u8.data_ptr<uint8_t>(), u8.sizes().vec());
  out.labels = torch::cat(lbls);
  out.numClasses = numClasses;
  return out;
}

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

// ---------- synthetic sets ----------
// gaussian: K class means uniform in [0.25, 0.75]^D; x = clamp(mean_y + noise·N(0, I), 0, 1).
// linear: x uniform in [0, 1]^D, y = argmax_k (W (x − 0.5))_k for a random W [K, D]; points whose
//   top-two margin is below `margin` are redrawn, so a linear classifier separates them.
Loaded synthetic(const std::string& kind, int64_t n, int64_t k, int64_t c, int64_t s, double noise, double margin, uint64_t seed) {
  FL_CHECK(kind == "gaussian" || kind == "linear", ERR_ARG, "synthetic: unknown kind '", kind, "'; expected gaussian or linear");
  FL_CHECK(n > 0 && k >= 2 && c > 0 && s > 0, ERR_ARG, "synthetic: need n > 0, numClasses >= 2, channels > 0, size > 0");
  auto gen = at::detail::createCPUGenerator(seed);
  const int64_t D = c * s * s;
  auto f = torch::TensorOptions().dtype(torch::kFloat32);
  Loaded r;
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

}  // namespace

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

namespace {

// ---------- bindings ----------

std::string strArg(const Napi::CallbackInfo& info, size_t i, const char* what) {
  FL_CHECK(info.Length() > i && info[i].IsString(), ERR_ARG, what, ": expected a path (string)");
  return info[i].As<Napi::String>().Utf8Value();
}

Finisher finishLoaded(const Loaded& r) {
  return [r](Napi::Env env) -> Napi::Value {
    Napi::Object o = Napi::Object::New(env);
    o.Set("images", wrapTensor(env, r.images));
    if (r.labels.defined()) o.Set("labels", wrapTensor(env, r.labels));
    o.Set("numClasses", Napi::Number::New(env, static_cast<double>(r.numClasses)));
    return o;
  };
}

// loadIdx(imagesPath, labelsPath | '', numClasses, ctl?) -> Promise<{ images, labels?, numClasses }>
Napi::Value LoadIdxJs(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    std::string img = strArg(info, 0, "loadIdx(images)");
    std::string lbl = info.Length() > 1 && info[1].IsString() ? info[1].As<Napi::String>().Utf8Value() : "";
    int64_t k = info.Length() > 2 && info[2].IsNumber() ? info[2].As<Napi::Number>().Int64Value() : 10;
    return startOp(info.Env(), info[3], [img, lbl, k](OpContext&) { return finishLoaded(loadIdxPair(img, lbl, k)); });
  });
}

// loadCifar(paths: string[], variant: 10 | 100, coarse: boolean, ctl?) -> Promise<{ images, labels, numClasses }>
Napi::Value LoadCifarJs(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    FL_CHECK(info.Length() >= 2 && info[0].IsArray() && info[1].IsNumber(), ERR_ARG,
             "loadCifar(paths, variant): expected an array of paths and 10 or 100");
    std::vector<std::string> paths;
    Napi::Array a = info[0].As<Napi::Array>();
    for (uint32_t i = 0; i < a.Length(); ++i) {
      FL_CHECK(a.Get(i).IsString(), ERR_ARG, "loadCifar(paths): paths must be strings");
      paths.push_back(a.Get(i).As<Napi::String>().Utf8Value());
    }
    FL_CHECK(!paths.empty(), ERR_ARG, "loadCifar(paths): no files given");
    int variant = info[1].As<Napi::Number>().Int32Value();
    FL_CHECK(variant == 10 || variant == 100, ERR_ARG, "loadCifar: variant must be 10 or 100, got ", variant);
    bool coarse = info.Length() > 2 && info[2].ToBoolean().Value();
    return startOp(info.Env(), info[3], [paths, variant, coarse](OpContext& ctx) {
      return finishLoaded(loadCifar(paths, variant, coarse));
    });
  });
}

// loadNpy(path, role: 'images' | 'labels' | 'raw', ctl?) -> Promise<Tensor>
Napi::Value LoadNpyJs(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    std::string path = strArg(info, 0, "loadNpy(path)");
    std::string role = info.Length() > 1 && info[1].IsString() ? info[1].As<Napi::String>().Utf8Value() : "raw";
    FL_CHECK(role == "images" || role == "labels" || role == "raw", ERR_ARG, "loadNpy: role must be images, labels or raw");
    return startOp(info.Env(), info[2], [path, role](OpContext&) -> Finisher {
      torch::Tensor t = readNpy(path);
      if (role == "images") t = npyImages(t, path);
      else if (role == "labels") t = npyLabels(t, path);
      return [t](Napi::Env env) -> Napi::Value { return wrapTensor(env, t); };
    });
  });
}

// appendNpy(path, tensor, ctl?) -> Promise<number>: appends the tensor's values as little-endian
// float32 in C order to the existing file `path` (the body of an .npy whose header lib/data
// NpyWriter wrote), on the compute thread; resolves to the number of values written.
Napi::Value AppendNpyJs(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    std::string path = strArg(info, 0, "appendNpy(path)");
    torch::Tensor t = unwrapTensor(info[1], "appendNpy(tensor)");
    return startOp(info.Env(), info[2], [path, t](OpContext&) -> Finisher {
      FL_CHECK(t.is_floating_point(), ERR_DTYPE, "appendNpy(tensor): expected a float tensor, got ", dtypeName(t.scalar_type()));
      torch::Tensor f = t.detach().to(torch::kCPU, torch::kFloat32).contiguous();
      std::ofstream out(path, std::ios::binary | std::ios::app);
      FL_CHECK(out.is_open(), ERR_IO, "cannot append to '", path, "'");
      out.write(reinterpret_cast<const char*>(f.data_ptr<float>()), static_cast<std::streamsize>(f.numel() * sizeof(float)));
      out.close();
      FL_CHECK(!out.fail(), ERR_IO, "writing '", path, "' failed (disk full?)");
      const double n = static_cast<double>(f.numel());
      return [n](Napi::Env env) -> Napi::Value { return Napi::Number::New(env, n); };
    });
  });
}

// synthetic({ kind, n, numClasses, channels, size, noise, margin, seed }, ctl?) -> Promise<{ images, labels, numClasses }>
// (complete options: lib/options.ts SYNTHETIC_OPTIONS declares, validates and fills them)
Napi::Value SyntheticJs(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    OptionReader o(info[0], "synthetic");
    std::string kind = o.string("kind");
    int64_t n = o.integer("n"), k = o.integer("numClasses");
    int64_t c = o.integer("channels"), s = o.integer("size");
    double noise = o.num("noise"), margin = o.num("margin");
    uint64_t seed = static_cast<uint64_t>(o.integer("seed"));
    return startOp(info.Env(), info[1], [=](OpContext&) {
      return finishLoaded(synthetic(kind, n, k, c, s, noise, margin, seed));
    });
  });
}

// augment(x, seed, pad, flip, ctl?) -> Promise<Tensor>
Napi::Value AugmentJs(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    torch::Tensor x = unwrapTensor(info[0], "augment(x)");
    FL_CHECK(info.Length() >= 4 && info[1].IsNumber() && info[2].IsNumber(), ERR_ARG, "augment(x, seed, pad, flip)");
    uint64_t seed = static_cast<uint64_t>(info[1].As<Napi::Number>().Int64Value());
    int64_t pad = info[2].As<Napi::Number>().Int64Value();
    bool flip = info[3].ToBoolean().Value();
    return startOp(info.Env(), info[4], [x, seed, pad, flip](OpContext&) -> Finisher {
      torch::Tensor y = augment(x, seed, pad, flip);
      return [y](Napi::Env env) -> Napi::Value { return wrapTensor(env, y); };
    });
  });
}

}  // namespace

void InitData(Napi::Env env, Napi::Object exports) {
  exports.Set("loadIdx", Napi::Function::New(env, LoadIdxJs, "loadIdx"));
  exports.Set("loadCifar", Napi::Function::New(env, LoadCifarJs, "loadCifar"));
  exports.Set("loadNpy", Napi::Function::New(env, LoadNpyJs, "loadNpy"));
  exports.Set("appendNpy", Napi::Function::New(env, AppendNpyJs, "appendNpy"));
  exports.Set("synthetic", Napi::Function::New(env, SyntheticJs, "synthetic"));
  exports.Set("augment", Napi::Function::New(env, AugmentJs, "augment"));
}

}  // namespace fl
