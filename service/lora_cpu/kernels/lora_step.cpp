// The LoRA of a linear layer as the compiled model calls it, with no Python in between when it can.
//
// Every step calls the LoRA op of each linear layer (four per decoder layer). The Python around the
// products (finding the layer's packed weights, reading the step's plan) costs about as much as the
// kernel's reads for a few tokens, so the wrapper publishes both here: the step's plan when it
// changes (set_step) and a layer's packed weights when they are made or refreshed (set_layer).
// linear() then serves the step: an adapter's tokens through the kernel when they are few (decoding),
// with its weights widened once and two matrix products per packed slice when they are many (a prompt
// being read). Where a layer's weights are not yet packed for the step's slot layout, or the layer
// computes in another dtype, it calls the wrapper's Python op (persona_lora::linear), which packs and
// publishes the weights and then calls apply().
//
// The engine runs its model on one thread; the registry is not locked.

#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/stack.h>
#include <torch/library.h>

#include <cstdint>
#include <unordered_map>
#include <utility>
#include <vector>

#include "lora_packed.h"

namespace {

struct Layer {
  at::Tensor a, b, row_scales, slice_ends;
  int64_t version;  // the slot layout the weights were packed for
};

struct Step {
  bool published = false;
  int64_t version = -1;
  at::Tensor groups, rows;  // the adapters with few tokens (groups: slot, first, end into rows)
  at::Tensor wide_groups, wide_rows;  // the adapters with many
  std::unordered_map<const void*, Layer> layers;  // by the storage of the layer's first stacked A
};

std::unordered_map<int64_t, Step>& registry() {
  static std::unordered_map<int64_t, Step> steps;
  return steps;
}

void set_step(int64_t key, int64_t version, const at::Tensor& groups, const at::Tensor& rows,
              const at::Tensor& wide_groups, const at::Tensor& wide_rows) {
  for (const at::Tensor* t : {&groups, &rows, &wide_groups, &wide_rows}) {
    TORCH_CHECK(t->scalar_type() == at::kLong && t->is_contiguous(), "group tensors must be contiguous int64");
  }
  Step& step = registry()[key];
  step.published = true;
  step.version = version;
  step.groups = groups;
  step.rows = rows;
  step.wide_groups = wide_groups;
  step.wide_rows = wide_rows;
}

void set_layer(int64_t key, const at::Tensor& first_a, int64_t version, const at::Tensor& a, const at::Tensor& b,
               const at::Tensor& row_scales, const at::Tensor& slice_ends) {
  registry()[key].layers[first_a.data_ptr()] = Layer{a, b, row_scales, slice_ends, version};
}

void forget(int64_t key) { registry().erase(key); }

// The wrapper's Python op: packs and publishes the layer's weights, then calls apply().
void python_linear(int64_t key, const at::Tensor& y, const at::Tensor& x, at::TensorList a_stacked,
                   at::TensorList b_stacked, double scale) {
  static const c10::OperatorHandle op = c10::Dispatcher::singleton().findSchemaOrThrow("persona_lora::linear", "");
  torch::jit::Stack stack{key, y, x, a_stacked.vec(), b_stacked.vec(), scale};
  op.callBoxed(&stack);
}

// The tokens of adapters with many of them: each adapter's weights widened to float32 once, then
// x A^T and (x A^T) B^T per packed slice as matrix products.
void add_lora_wide(const at::Tensor& y, const at::Tensor& x, const Layer& layer, const at::Tensor& groups,
                   const at::Tensor& rows, double scale) {
  const int64_t* gs = groups.data_ptr<int64_t>();
  const int64_t* rs = rows.data_ptr<int64_t>();
  const int64_t* ends = layer.slice_ends.data_ptr<int64_t>();
  const int64_t rank = layer.b.size(1), n_slices = layer.slice_ends.size(0);
  for (int64_t g = 0; g < groups.size(0); ++g) {
    const int64_t slot = gs[3 * g], first = gs[3 * g + 1], count = gs[3 * g + 2] - first;
    const bool contiguous = rs[first + count - 1] - rs[first] == count - 1;  // rows ascend
    const at::Tensor index = rows.narrow(0, first, count);
    const at::Tensor tokens = contiguous ? x.narrow(0, rs[first], count) : x.index_select(0, index);
    const at::Tensor a = layer.a[slot].to(at::kFloat).mul_(layer.row_scales[slot].unsqueeze(1));
    const at::Tensor b = layer.b[slot].to(at::kFloat);
    const at::Tensor h = tokens.mm(a.t());
    int64_t start = 0;
    for (int64_t s = 0; s < n_slices; ++s) {
      const int64_t width = ends[s] - start;
      const at::Tensor part = h.narrow(1, s * rank, rank);
      const at::Tensor b_slice = b.narrow(1, start, width);
      if (contiguous) {
        y.narrow(0, rs[first], count).narrow(1, start, width).addmm_(part, b_slice, 1.0, scale);
      } else {
        y.narrow(1, start, width).index_add_(0, index, part.mm(b_slice), scale);
      }
      start = ends[s];
    }
  }
}

// The step's LoRA for one layer from what was published (y and x float32, rows contiguous).
void run_published(const Step& step, const Layer& layer, at::Tensor y, at::Tensor x, double scale) {
  if (y.dim() != 2) y = y.view({-1, y.size(-1)});
  if (x.dim() != 2) x = x.reshape({-1, x.size(-1)});
  if (x.stride(1) != 1) x = x.contiguous();
  if (step.groups.size(0) > 0) {
    persona_lora::add_lora_packed(y, x, layer.a, layer.b, layer.row_scales, layer.slice_ends, step.groups, step.rows,
                                  scale);
  }
  if (step.wide_groups.size(0) > 0) add_lora_wide(y, x, layer, step.wide_groups, step.wide_rows, scale);
}

// The step and the layer's weights, when both were published for the same slot layout.
std::pair<const Step*, const Layer*> published(int64_t key, const at::Tensor& first_a) {
  auto found = registry().find(key);
  if (found == registry().end() || !found->second.published) return {nullptr, nullptr};
  const Step& step = found->second;
  auto layer = step.layers.find(first_a.data_ptr());
  if (layer == step.layers.end() || layer->second.version != step.version) return {&step, nullptr};
  return {&step, &layer->second};
}

bool nothing_to_do(const Step& step) { return step.groups.size(0) == 0 && step.wide_groups.size(0) == 0; }

// y += scale * x A^T B^T with each token's adapter, every packed slice at once (the wrapper's op).
void linear(int64_t key, at::Tensor y, const at::Tensor& x, at::TensorList a_stacked, at::TensorList b_stacked,
            double scale) {
  TORCH_CHECK(!a_stacked.empty(), "a layer has at least one slice");
  const auto [step, layer] = published(key, a_stacked[0]);
  if (step != nullptr && nothing_to_do(*step)) return;
  if (layer == nullptr || y.scalar_type() != at::kFloat || x.scalar_type() != at::kFloat) {
    python_linear(key, y, x, a_stacked, b_stacked, scale);
    return;
  }
  run_published(*step, *layer, y, x, scale);
}

// linear() once the wrapper has packed and published the layer's weights for this step's layout.
void apply(int64_t key, at::Tensor y, const at::Tensor& x, const at::Tensor& first_a, double scale) {
  const auto [step, layer] = published(key, first_a);
  TORCH_CHECK(layer != nullptr, "the layer's weights were not published for this step's slot layout");
  TORCH_CHECK(y.scalar_type() == at::kFloat && x.scalar_type() == at::kFloat, "y and x must be float32");
  if (!nothing_to_do(*step)) run_published(*step, *layer, y, x, scale);
}

void linear_meta(int64_t, at::Tensor, const at::Tensor&, at::TensorList, at::TensorList, double) {}

}  // namespace

TORCH_LIBRARY_FRAGMENT(persona_lora_kernels, m) {
  m.def("linear(int key, Tensor(a!) y, Tensor x, Tensor[] a_stacked, Tensor[] b_stacked, float scale) -> ()");
  m.def("apply(int key, Tensor(a!) y, Tensor x, Tensor first_a, float scale) -> ()");
  m.def("set_step(int key, int version, Tensor groups, Tensor rows, Tensor wide_groups, Tensor wide_rows) -> ()");
  m.def("set_layer(int key, Tensor first_a, int version, Tensor a, Tensor b, Tensor row_scales, Tensor slice_ends) -> ()");
  m.def("forget(int key) -> ()", &forget);  // no tensors to dispatch on
}

TORCH_LIBRARY_IMPL(persona_lora_kernels, CPU, m) {
  m.impl("linear", &linear);
  m.impl("apply", &apply);
  m.impl("set_step", &set_step);
  m.impl("set_layer", &set_layer);
}

TORCH_LIBRARY_IMPL(persona_lora_kernels, Meta, m) { m.impl("linear", &linear_meta); }
