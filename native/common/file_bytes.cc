#include "common/file_bytes.h"
#include <sys/stat.h>
#include <zlib.h>
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include "common/errors.h"

namespace fl {

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

}  // namespace fl
