#include "model/rotary_permute.h"

#include <cstring>

namespace qforge {

namespace {
// Row i of every head comes from row src_of(i); the byte layout of a row does not matter, so the
// same code moves F32, F16 or quantized rows.
template <typename SrcRow>
void move_rows(const uint8_t* src, uint8_t* dst, int n_heads, int head_dim, size_t row_bytes, SrcRow src_of) {
  for (int h = 0; h < n_heads; ++h) {
    const size_t base = size_t(h) * size_t(head_dim);
    for (int i = 0; i < head_dim; ++i)
      std::memcpy(dst + (base + size_t(i)) * row_bytes, src + (base + src_of(i)) * row_bytes, row_bytes);
  }
}
}  // namespace

void adjacent_pairs_to_rotate_half_rows(const uint8_t* src, uint8_t* dst, int n_heads, int head_dim, size_t row_bytes) {
  const int half = head_dim / 2;
  move_rows(src, dst, n_heads, head_dim, row_bytes,
            [half](int i) { return i < half ? size_t(2 * i) : size_t(2 * (i - half) + 1); });
}

void rotate_half_to_adjacent_pairs_rows(const uint8_t* src, uint8_t* dst, int n_heads, int head_dim, size_t row_bytes) {
  const int half = head_dim / 2;
  move_rows(src, dst, n_heads, head_dim, row_bytes,
            [half](int i) { return i % 2 == 0 ? size_t(i / 2) : size_t(i / 2 + half); });
}

void adjacent_pairs_to_rotate_half(const float* src, float* dst, int n_heads, int head_dim, int64_t cols) {
  adjacent_pairs_to_rotate_half_rows(reinterpret_cast<const uint8_t*>(src), reinterpret_cast<uint8_t*>(dst), n_heads,
                                     head_dim, size_t(cols) * sizeof(float));
}

}  // namespace qforge
