// Reading a whole data file into memory, gunzipped when it is gzip (data.cc's readers).
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <string>
#include <utility>

namespace fl {

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
// are). ERR_IO when the file is missing, unreadable or not a regular file; ERR_FORMAT for corrupt
// or truncated gzip data or more than 8 GiB uncompressed.
Bytes readMaybeGz(const std::string& path);

}  // namespace fl
