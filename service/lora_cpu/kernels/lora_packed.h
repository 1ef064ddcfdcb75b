// The packed LoRA product (lora_packed.cpp), for the other sources of the kernel's library.
#pragma once

#include <ATen/core/Tensor.h>

namespace persona_lora {

// y[t] += scale * B[slot] (A[slot] x[t]) for the tokens of each group; see lora_packed.cpp.
void add_lora_packed(at::Tensor y, const at::Tensor& x, const at::Tensor& a, const at::Tensor& b,
                     const at::Tensor& row_scales, const at::Tensor& slice_ends, const at::Tensor& groups,
                     const at::Tensor& rows, double scale);

}  // namespace persona_lora
