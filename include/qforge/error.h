// Errors: one exception type that carries what went wrong, where, and the exit code the CLI returns.
#pragma once
#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace qforge {

enum class ErrorKind {
  BadInput,     // a file or argument the user gave is wrong: exit code 2
  Io,           // the OS refused (open, read, write, rename): exit code 3
  Unsupported,  // valid input that qforge does not handle yet: exit code 2
  Internal,     // a bug in qforge: exit code 70
};

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, std::string message) : std::runtime_error(std::move(message)), kind_(kind) {}
  ErrorKind kind() const { return kind_; }
  int exit_code() const;

 private:
  ErrorKind kind_;
};

// Throws ErrorKind::BadInput. Messages start with their origin, e.g.
// "safetensors: model.safetensors: tensor 'x': data_offsets [0, 12] past end of file (size 8)".
template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> f, Args&&... args) {
  throw Error(ErrorKind::BadInput, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
[[noreturn]] void fail_io(fmt::format_string<Args...> f, Args&&... args) {
  throw Error(ErrorKind::Io, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
[[noreturn]] void fail_unsupported(fmt::format_string<Args...> f, Args&&... args) {
  throw Error(ErrorKind::Unsupported, fmt::format(f, std::forward<Args>(args)...));
}

// Multiplies sizes from untrusted headers without overflow; fails with `what` on overflow.
uint64_t checked_mul(uint64_t a, uint64_t b, const std::string& what);
uint64_t checked_add(uint64_t a, uint64_t b, const std::string& what);

}  // namespace qforge
