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
inline float sum(Vec v) { return v; }
}  // namespace
#endif

namespace {

constexpr int64_t kBlock = 64;  // output columns per expand task

inline float widen(c10::Half v) { return static_cast<float>(v); }
inline float widen(int8_t v) { return static_cast<float>(v); }

constexpr int kTokens = 4;  // tokens of one group multiplied together: each weight widened once for them

// out[t] = x[t] . a for T tokens at once.
template <int T, typename W>
void dots(const float* const* x, const W* a, int64_t n, float* out) {
  Vec acc[T];
  for (int t = 0; t < T; ++t) acc[t] = zero();
  int64_t k = 0;
  for (; k + kLanes <= n; k += kLanes) {
    const Vec w = load_weights(a + k);
    for (int t = 0; t < T; ++t) acc[t] = fma(load_float(x[t] + k), w, acc[t]);
  }
  for (int t = 0; t < T; ++t) {
    float total = sum(acc[t]);
    for (int64_t j = k; j < n; ++j) total += x[t][j] * widen(a[j]);
    out[t] = total;
  }
}

// y[t][j] += scale * sum_q h[t][q] * b[q * stride + j] for j in [0, n), for T tokens at once.
template <int T, typename W>
void expands(float* const* y, const float* const* h, const W* b, int64_t rank, int64_t stride, int64_t n,
             float scale) {
  const Vec s = splat(scale);
  int64_t j = 0;
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

template <typename T>
void quantize(const T* s, int64_t row_stride, int64_t column_stride, int64_t n_rows, int64_t n, int8_t* d,
              int64_t d_stride, float* out_scales) {
  at::parallel_for(0, n_rows, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const T* row = s + r * row_stride;
      float largest = 0.f;
      for (int64_t k = 0; k < n; ++k) largest = std::max(largest, std::fabs(static_cast<float>(row[k * column_stride])));
      const float inverse = largest > 0.f ? 127.f / largest : 0.f;
      int8_t* target = d + r * d_stride;
      for (int64_t k = 0; k < n; ++k) {
        target[k] = static_cast<int8_t>(std::nearbyint(static_cast<float>(row[k * column_stride]) * inverse));
      }
      out_scales[r] = largest / 127.f;
    }
  });
}

// dst[r] = round(src[r] / scales[r]) with scales[r] = max |src[r]| / 127 (0 for a row of zeros), for
// each row r of a 2-D float32 or bfloat16 `src` of any strides (B's columns are its rows here): one
// pass to find the largest magnitude, one to write, without temporaries.
void quantize_rows(const at::Tensor& src, at::Tensor dst, at::Tensor scales) {
  TORCH_CHECK(src.dim() == 2 && dst.dim() == 2 && src.size(0) == dst.size(0) && src.size(1) == dst.size(1),
              "src and dst must be 2-D of one shape");
  TORCH_CHECK(dst.stride(1) == 1, "rows of dst must be contiguous");
  TORCH_CHECK(dst.scalar_type() == at::kChar && scales.scalar_type() == at::kFloat && scales.dim() == 1 &&
                  scales.size(0) == src.size(0) && scales.stride(0) == 1,
              "dst must be int8 and scales float32, one per row");
  int8_t* d = dst.data_ptr<int8_t>();
  float* out = scales.data_ptr<float>();
  if (src.scalar_type() == at::kFloat) {
    quantize(src.data_ptr<float>(), src.stride(0), src.stride(1), src.size(0), src.size(1), d, dst.stride(0), out);
  } else {
    TORCH_CHECK(src.scalar_type() == at::kBFloat16, "src must be float32 or bfloat16");
    quantize(src.data_ptr<c10::BFloat16>(), src.stride(0), src.stride(1), src.size(0), src.size(1), d, dst.stride(0),
             out);
  }
}

}  // namespace

TORCH_LIBRARY(persona_lora_kernels, m) {
  m.def(
      "add_lora_packed(Tensor(a!) y, Tensor x, Tensor a, Tensor b, Tensor row_scales, Tensor slice_ends, "
      "Tensor groups, Tensor rows, float scale) -> ()");
  m.def("quantize_rows(Tensor src, Tensor(a!) dst, Tensor(b!) scales) -> ()");
}

TORCH_LIBRARY_IMPL(persona_lora_kernels, CPU, m) {
  m.impl("add_lora_packed", &add_lora_packed);
  m.impl("quantize_rows", &quantize_rows);
}
