// LoRA products for a step's tokens with adapter weights kept in float16 and widened in registers.
//
// A decoding step reads every adapter in use once; in float32 those reads are most of the LoRA
// cost. Here A (slots x width x in) and B (slots x rank x out, every packed slice side by side, no
// zero blocks) are float16, products accumulate in float32, and each weight row is read once per
// step whatever the number of tokens that use it.

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#if defined(__AVX512F__)
#include <immintrin.h>
namespace {
constexpr int64_t kLanes = 16;
using Vec = __m512;
inline Vec load_half(const c10::Half* p) { return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }
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
inline Vec load_half(const c10::Half* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
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
inline Vec load_half(const c10::Half* p) { return static_cast<float>(*p); }
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

float dot(const float* x, const c10::Half* a, int64_t n) {
  Vec acc = zero();
  int64_t k = 0;
  for (; k + kLanes <= n; k += kLanes) acc = fma(load_float(x + k), load_half(a + k), acc);
  float total = sum(acc);
  for (; k < n; ++k) total += x[k] * static_cast<float>(a[k]);
  return total;
}

// y[j] += scale * sum_q h[q] * b[q * stride + j] for j in [0, n)
void expand(float* y, const float* h, const c10::Half* b, int64_t rank, int64_t stride, int64_t n, float scale) {
  int64_t j = 0;
  const Vec s = splat(scale);
  for (; j + kLanes <= n; j += kLanes) {
    Vec acc = zero();
    for (int64_t q = 0; q < rank; ++q) acc = fma(splat(h[q]), load_half(b + q * stride + j), acc);
    store_float(y + j, fma(acc, s, load_float(y + j)));
  }
  for (; j < n; ++j) {
    float acc = 0.f;
    for (int64_t q = 0; q < rank; ++q) acc += h[q] * static_cast<float>(b[q * stride + j]);
    y[j] += scale * acc;
  }
}

struct Block {
  int64_t group, slice, start, stop;
};

// y[t] += scale * slot_scales[slot] * B[slot] (A[slot] x[t]) for the tokens of each group.
//   y: tokens x >=out float32, x: tokens x in float32 (rows contiguous)
//   a: slots x width x in float16, b: slots x rank x out float16 (width = slices * rank)
//   slot_scales: float32 per slot, what the stored A and B were divided by (to use float16's range)
//   slice_ends: the end column of each packed slice in b's out
//   groups: G x 3 (slot, first, end) into rows; rows: the token of each grouped row
void add_lora_half(at::Tensor y, const at::Tensor& x, const at::Tensor& a, const at::Tensor& b,
                   const at::Tensor& slot_scales, const at::Tensor& slice_ends, const at::Tensor& groups,
                   const at::Tensor& rows, double scale) {
  TORCH_CHECK(y.scalar_type() == at::kFloat && x.scalar_type() == at::kFloat, "y and x must be float32");
  TORCH_CHECK(a.scalar_type() == at::kHalf && b.scalar_type() == at::kHalf, "a and b must be float16");
  TORCH_CHECK(a.is_contiguous() && b.is_contiguous(), "a and b must be contiguous");
  TORCH_CHECK(x.stride(1) == 1 && y.stride(1) == 1, "rows of x and y must be contiguous");
  TORCH_CHECK(slot_scales.scalar_type() == at::kFloat && slot_scales.size(0) == a.size(0), "one float32 scale per slot");
  TORCH_CHECK(slice_ends.scalar_type() == at::kLong && groups.scalar_type() == at::kLong &&
                  rows.scalar_type() == at::kLong,
              "slice_ends, groups and rows must be int64");
  const int64_t n_groups = groups.size(0);
  const int64_t n_rows = rows.size(0);
  if (n_groups == 0 || n_rows == 0) return;
  const int64_t width = a.size(1), in = a.size(2), rank = b.size(1), out = b.size(2);
  const int64_t n_slices = slice_ends.size(0);
  TORCH_CHECK(width == n_slices * rank, "a's width must be slices x rank");
  TORCH_CHECK(x.size(1) == in && y.size(1) >= out, "x or y does not match the adapter's shape");

  const float* xs = x.data_ptr<float>();
  float* ys = y.data_ptr<float>();
  const c10::Half* as = a.data_ptr<c10::Half>();
  const c10::Half* bs = b.data_ptr<c10::Half>();
  const float* slot_scale = slot_scales.data_ptr<float>();
  const int64_t* ends = slice_ends.data_ptr<int64_t>();
  const int64_t* gs = groups.data_ptr<int64_t>();
  const int64_t* rs = rows.data_ptr<int64_t>();
  const int64_t x_stride = x.stride(0), y_stride = y.stride(0);

  std::vector<float> h(n_rows * width);
  at::parallel_for(0, n_groups * width, 8, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t g = task / width, w = task % width;
      const c10::Half* row = as + (gs[3 * g] * width + w) * in;
      for (int64_t i = gs[3 * g + 1]; i < gs[3 * g + 2]; ++i) h[i * width + w] = dot(xs + rs[i] * x_stride, row, in);
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
      const float f = static_cast<float>(scale) * slot_scale[slot];
      const c10::Half* bcol = bs + slot * rank * out + blk.start;
      for (int64_t i = gs[3 * blk.group + 1]; i < gs[3 * blk.group + 2]; ++i) {
        expand(ys + rs[i] * y_stride + blk.start, h.data() + i * width + blk.slice * rank, bcol, rank, out,
               blk.stop - blk.start, f);
      }
    }
  });
}

}  // namespace

TORCH_LIBRARY(persona_lora_kernels, m) {
  m.def(
      "add_lora_half(Tensor(a!) y, Tensor x, Tensor a, Tensor b, Tensor slot_scales, Tensor slice_ends, Tensor groups, "
      "Tensor rows, float scale) -> ()");
}

TORCH_LIBRARY_IMPL(persona_lora_kernels, CPU, m) { m.impl("add_lora_half", &add_lora_half); }
