// LoRA products for a step's tokens with adapter weights kept in 8 or 16 bits and widened in registers.
//
// A decoding step reads every adapter in use once; in float32 those reads are most of the LoRA
// cost. Here A (slots x width x in) and B (slots x rank x out, every packed slice side by side, no
// zero blocks) are int8 or float16, each row of A and each rank row of a slice of B with a float32
// scale (their product, one per slot and A row: `row_scales`), products accumulate in float32, and
// each weight row is read once per step whatever the number of tokens that use it.

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include "lora_packed.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#if defined(__AVX512F__)
#include <immintrin.h>
namespace {
constexpr int64_t kLanes = 16;
using Vec = __m512;
inline Vec load_weights(const c10::Half* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
inline Vec load_weights(const int8_t* p) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
}
inline Vec load_float(const float* p) { return _mm512_loadu_ps(p); }
inline void store_float(float* p, Vec v) { _mm512_storeu_ps(p, v); }
inline Vec zero() { return _mm512_setzero_ps(); }
inline Vec splat(float v) { return _mm512_set1_ps(v); }
inline Vec fma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
inline Vec add(Vec a, Vec b) { return _mm512_add_ps(a, b); }
inline float sum(Vec v) { return _mm512_reduce_add_ps(v); }
}  // namespace
#elif defined(__AVX2__) && defined(__F16C__) && defined(__FMA__)
#include <immintrin.h>
namespace {
constexpr int64_t kLanes = 8;
using Vec = __m256;
inline Vec load_weights(const c10::Half* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
inline Vec load_weights(const int8_t* p) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}
inline Vec load_float(const float* p) { return _mm256_loadu_ps(p); }
inline void store_float(float* p, Vec v) { _mm256_storeu_ps(p, v); }
inline Vec zero() { return _mm256_setzero_ps(); }
inline Vec splat(float v) { return _mm256_set1_ps(v); }
inline Vec fma(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
inline Vec add(Vec a, Vec b) { return _mm256_add_ps(a, b); }
inline float sum(Vec v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_hadd_ps(s, s);
  s = _mm_hadd_ps(s, s);
  return _mm_cvtss_f32(s);
}
}  // namespace
#else
namespace {
constexpr int64_t kLanes = 1;
using Vec = float;
inline Vec load_weights(const c10::Half* p) { return static_cast<float>(*p); }
inline Vec load_weights(const int8_t* p) { return static_cast<float>(*p); }
inline Vec load_float(const float* p) { return *p; }
inline void store_float(float* p, Vec v) { *p = v; }
inline Vec zero() { return 0.f; }
inline Vec splat(float v) { return v; }
inline Vec fma(Vec a, Vec b, Vec c) { return a * b + c; }
inline Vec add(Vec a, Vec b) { return a + b; }
inline float sum(Vec v) { return v; }
}  // namespace
#endif

namespace {

constexpr int64_t kBlock = 64;  // output columns per expand task

inline float widen(c10::Half v) { return static_cast<float>(v); }
inline float widen(int8_t v) { return static_cast<float>(v); }

constexpr int kTokens = 4;  // tokens of one group multiplied together: each weight widened once for them

// Independent sums a token keeps in dots(): an FMA waits for the one before it on the same sum, so
// with few tokens a single sum per token would leave the FMA units idle.
template <int T>
constexpr int kChains = T == 1 ? 4 : 2;

// How far ahead of its reads a loop asks for the weights (bytes): a step reads each adapter once, from
// memory the base model's weights have just passed through, and the hardware's own prefetching
// does not run far enough ahead of short rows.
constexpr int64_t kAheadA = 512;  // along a row of A
constexpr int64_t kAheadB = 128;  // along a rank row of B, past this block's columns

inline void prefetch(const void* p, int64_t ahead) { __builtin_prefetch(static_cast<const char*>(p) + ahead, 0, 3); }

// out[t] = x[t] . a for T tokens at once.
template <int T, typename W>
void dots(const float* const* x, const W* a, int64_t n, float* out) {
  constexpr int U = kChains<T>;
  Vec acc[T][U];
  for (int t = 0; t < T; ++t)
    for (int u = 0; u < U; ++u) acc[t][u] = zero();
  int64_t k = 0;
  for (; k + U * kLanes <= n; k += U * kLanes) {
    prefetch(a + k, kAheadA);
    for (int u = 0; u < U; ++u) {
      const Vec w = load_weights(a + k + u * kLanes);
      for (int t = 0; t < T; ++t) acc[t][u] = fma(load_float(x[t] + k + u * kLanes), w, acc[t][u]);
    }
  }
  for (; k + kLanes <= n; k += kLanes) {
    const Vec w = load_weights(a + k);
    for (int t = 0; t < T; ++t) acc[t][0] = fma(load_float(x[t] + k), w, acc[t][0]);
  }
  for (int t = 0; t < T; ++t) {
    Vec all = acc[t][0];
    for (int u = 1; u < U; ++u) all = add(all, acc[t][u]);
    float total = sum(all);
    for (int64_t j = k; j < n; ++j) total += x[t][j] * widen(a[j]);
    out[t] = total;
  }
}

// y[t][j] += scale * sum_q h[t][q] * b[q * stride + j] for j in [0, n), for T tokens at once.
template <int T, typename W>
void expands(float* const* y, const float* const* h, const W* b, int64_t rank, int64_t stride, int64_t n,
             float scale) {
  constexpr int C = 4;  // column vectors per pass: T * C independent sums
  const Vec s = splat(scale);
  int64_t j = 0;
  for (; j + C * kLanes <= n; j += C * kLanes) {
    Vec acc[T][C];
    for (int t = 0; t < T; ++t)
      for (int c = 0; c < C; ++c) acc[t][c] = zero();
    for (int64_t q = 0; q < rank; ++q) {
      prefetch(b + q * stride + j, kAheadB);
      Vec w[C];
      for (int c = 0; c < C; ++c) w[c] = load_weights(b + q * stride + j + c * kLanes);
      for (int t = 0; t < T; ++t) {
        const Vec hq = splat(h[t][q]);
        for (int c = 0; c < C; ++c) acc[t][c] = fma(hq, w[c], acc[t][c]);
      }
    }
    for (int t = 0; t < T; ++t)
      for (int c = 0; c < C; ++c) {
        float* out = y[t] + j + c * kLanes;
        store_float(out, fma(acc[t][c], s, load_float(out)));
      }
  }
  for (; j + kLanes <= n; j += kLanes) {
    Vec acc[T];
    for (int t = 0; t < T; ++t) acc[t] = zero();
    for (int64_t q = 0; q < rank; ++q) {
      const Vec w = load_weights(b + q * stride + j);
      for (int t = 0; t < T; ++t) acc[t] = fma(splat(h[t][q]), w, acc[t]);
    }
    for (int t = 0; t < T; ++t) store_float(y[t] + j, fma(acc[t], s, load_float(y[t] + j)));
  }
  for (; j < n; ++j) {
    for (int t = 0; t < T; ++t) {
      float acc = 0.f;
      for (int64_t q = 0; q < rank; ++q) acc += h[t][q] * widen(b[q * stride + j]);
      y[t][j] += scale * acc;
    }
  }
}

// Calls f.template operator()<T>() with T = count (1 to kTokens).
template <typename F>
void with_count(int64_t count, F&& f) {
  switch (count) {
    case 4: f.template operator()<4>(); break;
    case 3: f.template operator()<3>(); break;
    case 2: f.template operator()<2>(); break;
    default: f.template operator()<1>(); break;
  }
}

struct Block {
  int64_t group, slice, start, stop;
};

template <typename W>
void run(float* ys, int64_t y_stride, const float* xs, int64_t x_stride, const W* as, const W* bs,
         const float* row_scales, const int64_t* ends, int64_t n_slices, const int64_t* gs, int64_t n_groups,
         const int64_t* rs, int64_t n_rows, int64_t width, int64_t in, int64_t rank, int64_t out, float scale) {
  // h[i][w] = row_scales[slot][w] * (A[slot][w] . x[token i]): B's row scales are folded in here.
  std::vector<float> h(n_rows * width);
  at::parallel_for(0, n_groups * width, 8, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t g = task / width, w = task % width;
      const int64_t slot = gs[3 * g];
      const W* row = as + (slot * width + w) * in;
      const float f = row_scales[slot * width + w];
      for (int64_t i = gs[3 * g + 1]; i < gs[3 * g + 2]; i += kTokens) {
        const int64_t count = std::min<int64_t>(kTokens, gs[3 * g + 2] - i);
        const float* x[kTokens];
        float out[kTokens];
        for (int64_t t = 0; t < count; ++t) x[t] = xs + rs[i + t] * x_stride;
        with_count(count, [&]<int T>() { dots<T>(x, row, in, out); });
        for (int64_t t = 0; t < count; ++t) h[(i + t) * width + w] = f * out[t];
      }
    }
  });

  std::vector<Block> blocks;
  for (int64_t g = 0; g < n_groups; ++g) {
    int64_t start = 0;
    for (int64_t s = 0; s < n_slices; ++s) {
      for (int64_t c = start; c < ends[s]; c += kBlock) blocks.push_back({g, s, c, std::min(c + kBlock, ends[s])});
      start = ends[s];
    }
  }
  at::parallel_for(0, static_cast<int64_t>(blocks.size()), 4, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      const Block& blk = blocks[k];
      const int64_t slot = gs[3 * blk.group];
      const W* bcol = bs + slot * rank * out + blk.start;
      for (int64_t i = gs[3 * blk.group + 1]; i < gs[3 * blk.group + 2]; i += kTokens) {
        const int64_t count = std::min<int64_t>(kTokens, gs[3 * blk.group + 2] - i);
        float* y[kTokens];
        const float* hs[kTokens];
        for (int64_t t = 0; t < count; ++t) {
          y[t] = ys + rs[i + t] * y_stride + blk.start;
          hs[t] = h.data() + (i + t) * width + blk.slice * rank;
        }
        with_count(count, [&]<int T>() { expands<T>(y, hs, bcol, rank, out, blk.stop - blk.start, scale); });
      }
    }
  });
}

}  // namespace

namespace persona_lora {

// y[t] += scale * B[slot] (A[slot] x[t]) for the tokens of each group, weights widened from a and b.
//   y: tokens x >=out float32, x: tokens x in float32 (rows contiguous)
//   a: slots x width x in, b: slots x rank x out, both int8 or both float16 (width = slices * rank)
//   row_scales: slots x width float32, what A's row w times B's rank row w % rank of slice
//     w / rank were divided by when stored
//   slice_ends: the end column of each packed slice in b's out
//   groups: G x 3 (slot, first, end) into rows; rows: the token of each grouped row
void add_lora_packed(at::Tensor y, const at::Tensor& x, const at::Tensor& a, const at::Tensor& b,
                     const at::Tensor& row_scales, const at::Tensor& slice_ends, const at::Tensor& groups,
                     const at::Tensor& rows, double scale) {
  TORCH_CHECK(y.scalar_type() == at::kFloat && x.scalar_type() == at::kFloat, "y and x must be float32");
  TORCH_CHECK(a.scalar_type() == b.scalar_type() && (a.scalar_type() == at::kHalf || a.scalar_type() == at::kChar),
              "a and b must both be float16 or both int8");
  TORCH_CHECK(a.is_contiguous() && b.is_contiguous() && row_scales.is_contiguous(), "a, b and row_scales must be contiguous");
  TORCH_CHECK(x.stride(1) == 1 && y.stride(1) == 1, "rows of x and y must be contiguous");
  TORCH_CHECK(slice_ends.scalar_type() == at::kLong && groups.scalar_type() == at::kLong &&
                  rows.scalar_type() == at::kLong,
              "slice_ends, groups and rows must be int64");
  const int64_t n_groups = groups.size(0);
  const int64_t n_rows = rows.size(0);
  if (n_groups == 0 || n_rows == 0) return;
  const int64_t width = a.size(1), in = a.size(2), rank = b.size(1), out = b.size(2);
  const int64_t n_slices = slice_ends.size(0);
  TORCH_CHECK(width == n_slices * rank, "a's width must be slices x rank");
  TORCH_CHECK(row_scales.scalar_type() == at::kFloat && row_scales.size(0) == a.size(0) && row_scales.size(1) == width,
              "row_scales must be float32, slots x width");
  TORCH_CHECK(x.size(1) == in && y.size(1) >= out, "x or y does not match the adapter's shape");

  const float f = static_cast<float>(scale);
  const int64_t* ends = slice_ends.data_ptr<int64_t>();
  const int64_t* gs = groups.data_ptr<int64_t>();
  const int64_t* rs = rows.data_ptr<int64_t>();
  float* ys = y.data_ptr<float>();
  const float* xs = x.data_ptr<float>();
  const float* scales = row_scales.data_ptr<float>();
  if (a.scalar_type() == at::kHalf) {
    run(ys, y.stride(0), xs, x.stride(0), a.data_ptr<c10::Half>(), b.data_ptr<c10::Half>(), scales, ends, n_slices, gs,
        n_groups, rs, n_rows, width, in, rank, out, f);
  } else {
    run(ys, y.stride(0), xs, x.stride(0), a.data_ptr<int8_t>(), b.data_ptr<int8_t>(), scales, ends, n_slices, gs,
        n_groups, rs, n_rows, width, in, rank, out, f);
  }
}

}  // namespace persona_lora

namespace {

// The largest magnitude among n contiguous values, in lanes the compiler can vectorize.
template <typename T>
float largest_magnitude(const T* p, int64_t n) {
  constexpr int64_t kWidth = 16;
  float lanes[kWidth] = {};
  int64_t k = 0;
  for (; k + kWidth <= n; k += kWidth) {
    for (int64_t j = 0; j < kWidth; ++j) lanes[j] = std::max(lanes[j], std::fabs(static_cast<float>(p[k + j])));
  }
  float largest = 0.f;
  for (; k < n; ++k) largest = std::max(largest, std::fabs(static_cast<float>(p[k])));
  for (float lane : lanes) largest = std::max(largest, lane);
  return largest;
}

inline float inverse_scale(float largest) { return largest > 0.f ? 127.f / largest : 0.f; }

inline int8_t round_to_int8(float v) { return static_cast<int8_t>(std::nearbyint(v)); }

// dst[k] = round(src[k] / scale) with scale = max |src| / 127 (0 for a row of zeros); returns scale.
template <typename T>
float quantize_row(const T* src, int64_t n, int8_t* dst) {
  const float largest = largest_magnitude(src, n);
  const float inverse = inverse_scale(largest);
  for (int64_t k = 0; k < n; ++k) dst[k] = round_to_int8(static_cast<float>(src[k]) * inverse);
  return largest / 127.f;
}

// The columns of a row-major n_rows x n_columns matrix (rows row_stride apart) quantized as the rows
// of dst (n_columns x n_rows, rows d_stride apart), a scale per column: src is read in memory order,
// a tile of rows at a time quantized in place and then written out transposed.
template <typename T>
void quantize_columns(const T* src, int64_t row_stride, int64_t n_rows, int64_t n_columns, int8_t* dst,
                      int64_t d_stride, float* scales) {
  std::vector<float> largest(n_columns, 0.f), inverse(n_columns);
  for (int64_t r = 0; r < n_rows; ++r) {
    const T* row = src + r * row_stride;
    for (int64_t c = 0; c < n_columns; ++c) largest[c] = std::max(largest[c], std::fabs(static_cast<float>(row[c])));
  }
  for (int64_t c = 0; c < n_columns; ++c) {
    inverse[c] = inverse_scale(largest[c]);
    scales[c] = largest[c] / 127.f;
  }
  constexpr int64_t kTile = 64;
  std::vector<int8_t> tile(kTile * n_columns);
  for (int64_t first = 0; first < n_rows; first += kTile) {
    const int64_t count = std::min(kTile, n_rows - first);
    for (int64_t i = 0; i < count; ++i) {
      const T* row = src + (first + i) * row_stride;
      int8_t* t = tile.data() + i * n_columns;
      for (int64_t c = 0; c < n_columns; ++c) t[c] = round_to_int8(static_cast<float>(row[c]) * inverse[c]);
    }
    for (int64_t c = 0; c < n_columns; ++c) {
      int8_t* target = dst + c * d_stride + first;
      for (int64_t i = 0; i < count; ++i) target[i] = tile[i * n_columns + c];
    }
  }
}

template <typename T>
bool pack(at::TensorList a_stacked, at::TensorList b_stacked, int64_t slot, int8_t* a, int8_t* b, float* scales,
          int64_t in, int64_t rank, int64_t out) {
  std::vector<float> b_scales(rank);
  int64_t start = 0;
  for (size_t s = 0; s < a_stacked.size(); ++s) {
    const at::Tensor& as = a_stacked[s];
    const at::Tensor& bs = b_stacked[s];
    const T* a_rows = as.data_ptr<T>() + slot * as.stride(0);
    for (int64_t w = 0; w < rank; ++w) {
      scales[s * rank + w] = quantize_row(a_rows + w * as.stride(2), in, a + (s * rank + w) * in);
    }
    quantize_columns(bs.data_ptr<T>() + slot * bs.stride(0), bs.stride(2), bs.size(2), rank, b + start, out,
                     b_scales.data());
    for (int64_t w = 0; w < rank; ++w) scales[s * rank + w] *= b_scales[w];
    start += bs.size(2);
  }
  return std::any_of(scales, scales + a_stacked.size() * rank, [](float v) { return v != 0.f; });
}

// Copies one slot's adapter from vLLM's stacked tensors into the int8 layout of add_lora_packed, a
// row of A or a rank row of a slice of B at a time (a row of zeros gets the scale 0), and returns
// whether any weight of it is nonzero.
//   a_stacked[s]: slots x 1 x rank x in, b_stacked[s]: slots x 1 x out_s x rank, float32 or bfloat16
//   a: slots x width x in, b: slots x rank x out, int8; row_scales: slots x width float32
bool pack_slot(at::TensorList a_stacked, at::TensorList b_stacked, int64_t slot, at::Tensor a, at::Tensor b,
               at::Tensor row_scales) {
  TORCH_CHECK(!a_stacked.empty() && a_stacked.size() == b_stacked.size(), "one A and one B per slice");
  TORCH_CHECK(a.scalar_type() == at::kChar && b.scalar_type() == at::kChar && row_scales.scalar_type() == at::kFloat,
              "a and b must be int8 and row_scales float32");
  TORCH_CHECK(a.is_contiguous() && b.is_contiguous() && row_scales.is_contiguous(), "a, b and row_scales must be contiguous");
  const int64_t rank = b.size(1), in = a.size(2), out = b.size(2);
  const auto dtype = a_stacked[0].scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kBFloat16, "stacked weights must be float32 or bfloat16");
  TORCH_CHECK(a.size(1) == static_cast<int64_t>(a_stacked.size()) * rank && slot >= 0 && slot < a.size(0),
              "a's width must be slices x rank, and slot one of its slots");
  int64_t total = 0;
  for (size_t s = 0; s < a_stacked.size(); ++s) {
    const at::Tensor& as = a_stacked[s];
    const at::Tensor& bs = b_stacked[s];
    TORCH_CHECK(as.scalar_type() == dtype && bs.scalar_type() == dtype, "stacked weights of one dtype");
    TORCH_CHECK(as.dim() == 4 && bs.dim() == 4 && as.size(2) == rank && as.size(3) == in && bs.size(3) == rank,
                "stacked A must be slots x 1 x rank x in and B slots x 1 x out x rank");
    TORCH_CHECK(as.stride(3) == 1 && bs.stride(3) == 1, "rows of the stacked weights must be contiguous");
    total += bs.size(2);
  }
  TORCH_CHECK(total == out, "b's columns must be the slices' outputs side by side");
  int8_t* a_slot = a.data_ptr<int8_t>() + slot * a.stride(0);
  int8_t* b_slot = b.data_ptr<int8_t>() + slot * b.stride(0);
  float* scales = row_scales.data_ptr<float>() + slot * row_scales.stride(0);
  if (dtype == at::kFloat) return pack<float>(a_stacked, b_stacked, slot, a_slot, b_slot, scales, in, rank, out);
  return pack<c10::BFloat16>(a_stacked, b_stacked, slot, a_slot, b_slot, scales, in, rank, out);
}

}  // namespace

TORCH_LIBRARY(persona_lora_kernels, m) {
  m.def(
      "add_lora_packed(Tensor(a!) y, Tensor x, Tensor a, Tensor b, Tensor row_scales, Tensor slice_ends, "
      "Tensor groups, Tensor rows, float scale) -> ()");
  m.def("pack_slot(Tensor[] a_stacked, Tensor[] b_stacked, int slot, Tensor(a!) a, Tensor(b!) b, Tensor(c!) row_scales) -> bool");
}

TORCH_LIBRARY_IMPL(persona_lora_kernels, CPU, m) {
  m.impl("add_lora_packed", &persona_lora::add_lora_packed);
  m.impl("pack_slot", &pack_slot);
}
