// Row order of rotary projections. Hugging Face's rotate_half (what qforge's engine implements)
// pairs element i of a head with element i + head_dim/2; llama2.c and llama.cpp's GGUF files pair
// adjacent elements (2i, 2i+1), and their converters reorder the rows of the Q and K projections
// (and Q/K biases) to suit. Importers of those formats undo that reordering.
#pragma once
#include <cstddef>
#include <cstdint>

namespace qforge {

// Copies a [n_heads * head_dim, cols] row-major matrix from src to dst (which must not overlap),
// moving row 2i of every head to row i and row 2i+1 to row i + head_dim/2. head_dim must be even.
// A bias is the same with cols = 1.
void adjacent_pairs_to_rotate_half(const float* src, float* dst, int n_heads, int head_dim, int64_t cols);
// The same on rows of any storage type, each row_bytes long (quantized rows move as whole rows).
void adjacent_pairs_to_rotate_half_rows(const uint8_t* src, uint8_t* dst, int n_heads, int head_dim, size_t row_bytes);
// The inverse, as llama.cpp's converter writes Q and K: row i of a head goes to row 2i (i < half)
// or 2(i - half) + 1.
void rotate_half_to_adjacent_pairs_rows(const uint8_t* src, uint8_t* dst, int n_heads, int head_dim, size_t row_bytes);

}  // namespace qforge
