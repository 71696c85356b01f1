// Helpers shared by the unit tests: where ../shared is, temp dirs, running the CLI.
#pragma once
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <string>

namespace qforge::test {

// Path inside the shared data folder (CMake setting QFORGE_SHARED_DIR, default ../shared).
inline std::string shared(const std::string& rel) {
  const char* env = std::getenv("QFORGE_SHARED_DIR");
  std::string base = env && *env ? env : QFORGE_SHARED_DIR;
  return base + "/" + rel;
}

inline std::string source(const std::string& rel) { return std::string(QFORGE_SOURCE_DIR) + "/" + rel; }

// A fresh temporary directory, removed when the object goes out of scope.
struct TempDir {
  std::filesystem::path path;
  TempDir() {
    char tmpl[] = "/tmp/qforge-test-XXXXXX";
    path = mkdtemp(tmpl);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::string operator/(const std::string& rel) const { return (path / rel).string(); }
};

}  // namespace qforge::test
