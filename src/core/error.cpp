#include "qforge/error.h"

namespace qforge {

int Error::exit_code() const {
  switch (kind_) {
    case ErrorKind::BadInput:
    case ErrorKind::Unsupported: return 2;
    case ErrorKind::Io: return 3;
    case ErrorKind::Internal: return 70;
  }
  return 1;
}

uint64_t checked_mul(uint64_t a, uint64_t b, const std::string& what) {
  uint64_t r;
  if (__builtin_mul_overflow(a, b, &r)) fail("{}: size overflows 64 bits ({} x {})", what, a, b);
  return r;
}

uint64_t checked_add(uint64_t a, uint64_t b, const std::string& what) {
  uint64_t r;
  if (__builtin_add_overflow(a, b, &r)) fail("{}: size overflows 64 bits ({} + {})", what, a, b);
  return r;
}

}  // namespace qforge
