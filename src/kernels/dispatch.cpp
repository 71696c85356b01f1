// Runtime CPU detection and the choice of kernel table.
#include <cpuid.h>

#include <cstdlib>
#include <cstring>
#include <fmt/format.h>

#include "kernels/kernels.h"
#include "qforge/error.h"

namespace qforge::kernels {

namespace {

uint64_t xgetbv0() {
  uint32_t eax, edx;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (uint64_t(edx) << 32) | eax;
}

CpuFeatures detect() {
  CpuFeatures f;
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const bool osxsave = c & bit_OSXSAVE;
  const uint64_t xcr0 = osxsave ? xgetbv0() : 0;
  const bool ymm_ok = (xcr0 & 0x6) == 0x6;     // SSE and AVX state saved by the OS
  const bool zmm_ok = (xcr0 & 0xe6) == 0xe6;   // plus opmask and upper ZMM state
  f.fma = ymm_ok && (c & bit_FMA);
  f.f16c = ymm_ok && (c & bit_F16C);
  __cpuid_count(7, 0, a, b, c, d);
  f.avx2 = ymm_ok && (b & bit_AVX2);
  f.avx512f = zmm_ok && (b & bit_AVX512F);
  f.avx512bw = zmm_ok && (b & bit_AVX512BW);
  f.avx512vl = zmm_ok && (b & bit_AVX512VL);
  f.avx512dq = zmm_ok && (b & bit_AVX512DQ);
  f.avx512vnni = zmm_ok && (c & bit_AVX512VNNI);
  unsigned a1, b1, c1, d1;
  __cpuid_count(7, 1, a1, b1, c1, d1);
  f.avx512bf16 = zmm_ok && (a1 & (1u << 5));
  // Brand string from leaves 0x80000002..4.
  char brand[49] = {};
  unsigned max_ext = __get_cpuid_max(0x80000000, nullptr);
  if (max_ext >= 0x80000004) {
    for (unsigned i = 0; i < 3; ++i) {
      __cpuid(0x80000002 + i, a, b, c, d);
      std::memcpy(brand + 16 * i, &a, 4);
      std::memcpy(brand + 16 * i + 4, &b, 4);
      std::memcpy(brand + 16 * i + 8, &c, 4);
      std::memcpy(brand + 16 * i + 12, &d, 4);
    }
  }
  f.brand = brand;
  while (!f.brand.empty() && f.brand.back() == ' ') f.brand.pop_back();
  return f;
}

bool supports(const CpuFeatures& f, std::string_view isa) {
  if (isa == "scalar") return true;
  if (isa == "avx2") return f.avx2 && f.fma && f.f16c;
  if (isa == "avx512") return f.avx2 && f.fma && f.f16c && f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq;
  return false;
}

}  // namespace

const CpuFeatures& cpu() {
  static const CpuFeatures f = detect();
  return f;
}

std::string CpuFeatures::summary() const {
  std::string flags;
  auto add = [&](bool on, const char* n) {
    if (on) flags += flags.empty() ? n : fmt::format(" {}", n);
  };
  add(avx2, "avx2");
  add(fma, "fma");
  add(f16c, "f16c");
  add(avx512f, "avx512f");
  add(avx512bw, "avx512bw");
  add(avx512vl, "avx512vl");
  add(avx512vnni, "avx512vnni");
  add(avx512bf16, "avx512bf16");
  return fmt::format("{} ({})", brand.empty() ? "unknown CPU" : brand, flags);
}

const Table* table_for(std::string_view isa) {
  if (!supports(cpu(), isa)) return nullptr;
  if (isa == "scalar") return &table_scalar();
  if (isa == "avx2") return &table_avx2();
  if (isa == "avx512") return &table_avx512();
  return nullptr;
}

const Table& table() {
  static const Table* chosen = [] {
    if (const char* env = std::getenv("QFORGE_ISA"); env && *env) {
      if (const Table* t = table_for(env)) return t;
      throw Error(ErrorKind::BadInput, fmt::format("kernels: QFORGE_ISA={} is unknown or not supported by this CPU "
                                                   "(choose scalar, avx2 or avx512)", env));
    }
    for (const char* isa : {"avx512", "avx2", "scalar"})
      if (const Table* t = table_for(isa)) return t;
    return &table_scalar();
  }();
  return *chosen;
}

}  // namespace qforge::kernels
