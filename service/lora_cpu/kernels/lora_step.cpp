// The LoRA of a linear layer as the compiled model calls it, with no Python in between when it can.
//
// Every decoding step calls the LoRA op of each linear layer (four per decoder layer). The Python
// around the kernel (finding the layer's packed weights, reading the step's plan) costs about as much
// as the kernel's reads for a few tokens, so the wrapper publishes both here: the step's plan when it
// changes (set_step, once a step) and a layer's packed weights when they are made or refreshed
// (set_layer). linear() then calls the kernel directly; where the step needs more than the kernel
// (a prompt long enough for matrix products, another dtype) or a layer's weights are not yet packed
// for the step's slot layout, it calls the wrapper's Python op (persona_lora::linear), which packs
// them and publishes them for the next call.
//
// The engine runs its model on one thread; the registry is not locked.

#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/stack.h>
#include <torch/library.h>

#include <cstdint>
#include <unordered_map>
#include <vector>

#include "lora_packed.h"

namespace {

// What a step asks of the linear layers' LoRA (the values set_step is given).
enum Mode : int64_t {
  kNothing = 0,  // no token of the step has an adapter
  kKernel = 1,   // every adapter's tokens go through the kernel
  kPython = 2,   // the wrapper's Python decides (prompts, other dtypes)
};

struct Layer {
  at::Tensor a, b, row_scales, slice_ends;
  int64_t version;  // the slot layout the weights were packed for
};

struct Step {
  int64_t mode = kPython;
  int64_t version = -1;
  at::Tensor groups, rows;
  std::unordered_map<const void*, Layer> layers;  // by the storage of the layer's first stacked A
};

std::unordered_map<int64_t, Step>& registry() {
  static std::unordered_map<int64_t, Step> steps;
  return steps;
}

void set_step(int64_t key, int64_t mode, int64_t version, const at::Tensor& groups, const at::Tensor& rows) {
  TORCH_CHECK(mode == kNothing || mode == kKernel || mode == kPython, "mode must be 0, 1 or 2");
  TORCH_CHECK(groups.scalar_type() == at::kLong && rows.scalar_type() == at::kLong, "groups and rows must be int64");
  Step& step = registry()[key];
  step.mode = mode;
  step.version = version;
  step.groups = groups;
  step.rows = rows;
}

void set_layer(int64_t key, const at::Tensor& first_a, int64_t version, const at::Tensor& a, const at::Tensor& b,
               const at::Tensor& row_scales, const at::Tensor& slice_ends) {
  registry()[key].layers[first_a.data_ptr()] = Layer{a, b, row_scales, slice_ends, version};
}

void forget(int64_t key) { registry().erase(key); }

void python_linear(int64_t key, const at::Tensor& y, const at::Tensor& x, at::TensorList a_stacked,
                   at::TensorList b_stacked, double scale) {
  static const c10::OperatorHandle op = c10::Dispatcher::singleton().findSchemaOrThrow("persona_lora::linear", "");
  torch::jit::Stack stack{key, y, x, a_stacked.vec(), b_stacked.vec(), scale};
  op.callBoxed(&stack);
}

// The layer's packed weights when the kernel alone can serve this call, else nullptr.
const Layer* kernel_layer(int64_t key, const at::Tensor& y, const at::Tensor& x, at::TensorList a_stacked,
                          const Step** step_out) {
  auto found = registry().find(key);
  if (found == registry().end()) return nullptr;
  const Step& step = found->second;
  *step_out = &step;
  if (step.mode != kKernel || a_stacked.empty() || y.scalar_type() != at::kFloat || x.scalar_type() != at::kFloat) {
    return nullptr;
  }
  auto layer = step.layers.find(a_stacked[0].data_ptr());
  if (layer == step.layers.end() || layer->second.version != step.version) return nullptr;
  return &layer->second;
}

// y += scale * x A^T B^T with each token's adapter, every packed slice at once (the wrapper's op).
void linear(int64_t key, at::Tensor y, const at::Tensor& x, at::TensorList a_stacked, at::TensorList b_stacked,
            double scale) {
  const Step* step = nullptr;
  const Layer* layer = kernel_layer(key, y, x, a_stacked, &step);
  if (step != nullptr && step->mode == kNothing) return;
  if (layer == nullptr) {
    python_linear(key, y, x, a_stacked, b_stacked, scale);
    return;
  }
  at::Tensor y2 = y.dim() == 2 ? y : y.view({-1, y.size(-1)});
  at::Tensor x2 = x.dim() == 2 ? x : x.reshape({-1, x.size(-1)});
  if (x2.stride(1) != 1) x2 = x2.contiguous();
  persona_lora::add_lora_packed(y2, x2, layer->a, layer->b, layer->row_scales, layer->slice_ends, step->groups,
                                step->rows, scale);
}

void linear_meta(int64_t, at::Tensor, const at::Tensor&, at::TensorList, at::TensorList, double) {}

}  // namespace

TORCH_LIBRARY_FRAGMENT(persona_lora_kernels, m) {
  m.def("linear(int key, Tensor(a!) y, Tensor x, Tensor[] a_stacked, Tensor[] b_stacked, float scale) -> ()");
  m.def("set_step(int key, int mode, int version, Tensor groups, Tensor rows) -> ()");
  m.def("set_layer(int key, Tensor first_a, int version, Tensor a, Tensor b, Tensor row_scales, Tensor slice_ends) -> ()");
  m.def("forget(int key) -> ()", &forget);  // no tensors to dispatch on
}

TORCH_LIBRARY_IMPL(persona_lora_kernels, CPU, m) {
  m.impl("linear", &linear);
  m.impl("set_step", &set_step);
  m.impl("set_layer", &set_layer);
}

TORCH_LIBRARY_IMPL(persona_lora_kernels, Meta, m) { m.impl("linear", &linear_meta); }
