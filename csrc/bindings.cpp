// The one pybind11 binding file for sparsesnn._C.
//
// Python passes raw addresses (tensor.data_ptr()), sizes and, for CUDA, the stream handle;
// all checking of shapes, dtypes and devices happens in Python before a pointer is taken.
// Every kernel call releases the GIL. CUDA entry points also take the tensors' device index
// (made current for the call) and raise RuntimeError naming the op when a launch fails.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <string>
#include <tuple>
#include <utility>

#include "sparsesnn/lif.h"
#include "sparsesnn/spike_conv2d.h"
#include "sparsesnn/spike_linear.h"
#include "sparsesnn/pack.h"
#include "sparsesnn/packed_conv2d.h"
#include "sparsesnn/pruned_conv2d.h"
#include "sparsesnn/packed_linear.h"
#include "sparsesnn/cache_info.h"
#include "sparsesnn/pruned_blocks.h"
#include "sparsesnn/pruned_linear.h"
#include "sparsesnn/stdp_present.h"
#include "sparsesnn/stdp_update.h"

#if defined(SPARSESNN_OPENMP)
#include <omp.h>
#endif

namespace py = pybind11;
using namespace sparsesnn;

namespace {

template <typename T>
T* ptr(std::uintptr_t address) {
  return reinterpret_cast<T*>(address);
}

#if defined(SPARSESNN_WITH_CUDA)
void* stream_ptr(std::uintptr_t s) { return reinterpret_cast<void*>(s); }
#endif

std::string cpu_isa() {
#if defined(__AVX512F__)
  return "avx512";
#elif defined(__AVX2__)
  return "avx2";
#elif defined(__AVX__)
  return "avx";
#elif defined(__SSE4_2__)
  return "sse4.2";
#elif defined(__ARM_NEON) || defined(__ARM_NEON__)
  return "neon";
#else
  return "generic";
#endif
}

py::dict build_info() {
  py::dict d;
  d["version"] = SPARSESNN_VERSION;
  d["cpu_isa"] = cpu_isa();
#if defined(__FMA__)
  d["fma"] = true;
#else
  d["fma"] = false;
#endif
#if defined(SPARSESNN_OPENMP)
  d["openmp"] = true;
  d["openmp_max_threads"] = omp_get_max_threads();
#else
  d["openmp"] = false;
  d["openmp_max_threads"] = 1;
#endif
#if defined(SPARSESNN_WITH_CUDA)
  d["cuda"] = true;
  d["cuda_archs"] = std::string(SPARSESNN_CUDA_ARCHS);
#else
  d["cuda"] = false;
  d["cuda_archs"] = std::string();
#endif
#if defined(__VERSION__)
  d["compiler"] = std::string(__VERSION__);
#endif
  const CacheSizes& caches = cache_sizes();  // what the kernels size their chunks by
  d["l1d_bytes"] = caches.l1d;
  d["l2_bytes"] = caches.l2;
  d["l3_bytes"] = caches.l3;
  return d;
}

void bind_lif(py::module_& m) {
  py::class_<LifParams>(m, "LifParams")
      .def(py::init<>())
      .def_readwrite("T", &LifParams::T)
      .def_readwrite("N", &LifParams::N)
      .def_readwrite("decay", &LifParams::decay)
      .def_readwrite("v_threshold", &LifParams::v_threshold)
      .def_readwrite("v_reset", &LifParams::v_reset)
      .def_readwrite("hard_reset", &LifParams::hard_reset)
      .def_readwrite("decay_input", &LifParams::decay_input)
      .def_readwrite("leak", &LifParams::leak)
      .def_readwrite("detach_reset", &LifParams::detach_reset)
      .def_readwrite("surrogate", &LifParams::surrogate)
      .def_readwrite("alpha", &LifParams::alpha)
      .def_readwrite("threads", &LifParams::threads)
      .def_readwrite("state_step", &LifParams::state_step)
      .def_readwrite("state_min", &LifParams::state_min)
      .def_readwrite("state_max", &LifParams::state_max)
      .def_readwrite("state_rounding", &LifParams::state_rounding)
      .def_readwrite("seed", &LifParams::seed);

  m.def(
      "lif_forward_cpu",
      [](const LifParams& p, std::uintptr_t x, std::uintptr_t v0, std::uintptr_t s,
         std::uintptr_t v_last) {
        lif_forward_cpu(p, ptr<const float>(x), ptr<const float>(v0), ptr<float>(s),
                        ptr<float>(v_last));
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "lif_backward_cpu",
      [](const LifParams& p, std::uintptr_t gs, std::uintptr_t gv_last, std::uintptr_t x,
         std::uintptr_t v0, std::uintptr_t gx, std::uintptr_t gv0, bool want_decay,
         int64_t grad_t_stride) {
        if (grad_t_stride != -1 && grad_t_stride != 0 && grad_t_stride != p.N)
          throw std::invalid_argument("lif_backward_cpu: grad_t_stride must be -1, 0 or N");
        LifParams q = p;
        q.grad_t_stride = grad_t_stride;
        double gdecay = 0.0;
        lif_backward_cpu(q, ptr<const float>(gs), ptr<const float>(gv_last),
                         ptr<const float>(x), ptr<const float>(v0), ptr<float>(gx),
                         ptr<float>(gv0), want_decay ? &gdecay : nullptr);
        return gdecay;
      },
      py::arg("p"), py::arg("gs"), py::arg("gv_last"), py::arg("x"), py::arg("v0"), py::arg("gx"),
      py::arg("gv0"), py::arg("want_decay"), py::arg("grad_t_stride") = -1,
      py::call_guard<py::gil_scoped_release>());
#if defined(SPARSESNN_WITH_CUDA)
  m.def(
      "lif_forward_cuda",
      [](const LifParams& p, int dtype, std::uintptr_t decay, std::uintptr_t x, std::uintptr_t v0,
         std::uintptr_t s, std::uintptr_t v_last, std::uintptr_t h, int device,
         std::uintptr_t stream) {
        lif_forward_cuda(p, dtype, ptr<const float>(decay), ptr<const void>(x),
                         ptr<const float>(v0), ptr<void>(s), ptr<float>(v_last), ptr<float>(h),
                         device, stream_ptr(stream));
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "lif_backward_cuda",
      [](const LifParams& p, int dtype, std::uintptr_t decay, std::uintptr_t gs,
         std::uintptr_t gv_last, std::uintptr_t h, std::uintptr_t v0, std::uintptr_t gx,
         std::uintptr_t gv0, std::uintptr_t gdecay, std::uintptr_t work, int device,
         std::uintptr_t stream) {
        lif_backward_cuda(p, dtype, ptr<const float>(decay), ptr<const void>(gs),
                          ptr<const float>(gv_last), ptr<const float>(h), ptr<const float>(v0),
                          ptr<void>(gx), ptr<float>(gv0), ptr<float>(gdecay), ptr<double>(work),
                          device, stream_ptr(stream));
      },
      py::call_guard<py::gil_scoped_release>());
  m.def("lif_cuda_work_doubles", &lif_cuda_work_doubles);
  m.def("cuda_launch_error_selftest", &cuda_launch_error_selftest,
        py::call_guard<py::gil_scoped_release>());
#endif
}

// Event-driven spike x weight layers (spike_linear, spike_conv2d).
void bind_spike_ops(py::module_& m) {
  py::class_<SpikeLinearParams>(m, "SpikeLinearParams")
      .def(py::init<>())
      .def_readwrite("M", &SpikeLinearParams::M)
      .def_readwrite("K", &SpikeLinearParams::K)
      .def_readwrite("N", &SpikeLinearParams::N)
      .def_readwrite("spike_type", &SpikeLinearParams::spike_type)
      .def_readwrite("threads", &SpikeLinearParams::threads)
      .def_readwrite("ldw", &SpikeLinearParams::ldw)
      .def_readwrite("panel", &SpikeLinearParams::panel)
      .def_readwrite("order", &SpikeLinearParams::order);
  m.def("spike_linear_panel_width", &spike_linear_panel_width);
  py::class_<SpikeConv2dParams>(m, "SpikeConv2dParams")
      .def(py::init<>())
      .def_readwrite("N", &SpikeConv2dParams::N)
      .def_readwrite("C", &SpikeConv2dParams::C)
      .def_readwrite("H", &SpikeConv2dParams::H)
      .def_readwrite("W", &SpikeConv2dParams::W)
      .def_readwrite("O", &SpikeConv2dParams::O)
      .def_readwrite("KH", &SpikeConv2dParams::KH)
      .def_readwrite("KW", &SpikeConv2dParams::KW)
      .def_readwrite("OH", &SpikeConv2dParams::OH)
      .def_readwrite("OW", &SpikeConv2dParams::OW)
      .def_readwrite("stride_h", &SpikeConv2dParams::stride_h)
      .def_readwrite("stride_w", &SpikeConv2dParams::stride_w)
      .def_readwrite("pad_top", &SpikeConv2dParams::pad_top)
      .def_readwrite("pad_left", &SpikeConv2dParams::pad_left)
      .def_readwrite("dil_h", &SpikeConv2dParams::dil_h)
      .def_readwrite("dil_w", &SpikeConv2dParams::dil_w)
      .def_readwrite("groups", &SpikeConv2dParams::groups)
      .def_readwrite("spike_type", &SpikeConv2dParams::spike_type)
      .def_readwrite("threads", &SpikeConv2dParams::threads);

  m.def(
      "spike_count_cpu",
      [](std::uintptr_t s, int spike_type, int64_t n, int threads) {
        int64_t nonzero = 0, nonbinary = 0;
        spike_count_cpu(ptr<const void>(s), spike_type, n, threads, &nonzero, &nonbinary);
        return std::make_pair(nonzero, nonbinary);  // cast to a tuple after the GIL is back
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "spike_linear_forward_cpu",
      [](const SpikeLinearParams& p, std::uintptr_t s, std::uintptr_t wt, std::uintptr_t bias,
         std::uintptr_t out) {
        spike_linear_forward_cpu(p, ptr<const void>(s), ptr<const float>(wt),
                                 ptr<const float>(bias), ptr<float>(out));
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "spike_linear_grad_weight_cpu",
      [](const SpikeLinearParams& p, std::uintptr_t s, std::uintptr_t gout, std::uintptr_t gw) {
        spike_linear_grad_weight_cpu(p, ptr<const void>(s), ptr<const float>(gout), ptr<float>(gw));
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "spike_conv2d_forward_cpu",
      [](const SpikeConv2dParams& p, std::uintptr_t s, std::uintptr_t wr, std::uintptr_t bias,
         std::uintptr_t out) {
        spike_conv2d_forward_cpu(p, ptr<const void>(s), ptr<const float>(wr),
                                 ptr<const float>(bias), ptr<float>(out));
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "spike_conv2d_grad_weight_cpu",
      [](const SpikeConv2dParams& p, std::uintptr_t s, std::uintptr_t gout_cl, std::uintptr_t gw) {
        spike_conv2d_grad_weight_cpu(p, ptr<const void>(s), ptr<const float>(gout_cl),
                                     ptr<float>(gw));
      },
      py::call_guard<py::gil_scoped_release>());
#if defined(SPARSESNN_WITH_CUDA)
  m.def(
      "spike_linear_forward_cuda",
      [](const SpikeLinearParams& p, std::uintptr_t s, std::uintptr_t wt, std::uintptr_t bias,
         std::uintptr_t out, int device, std::uintptr_t stream) {
        spike_linear_forward_cuda(p, ptr<const void>(s), ptr<const float>(wt),
                                  ptr<const float>(bias), ptr<float>(out), device,
                                  stream_ptr(stream));
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "spike_linear_grad_weight_cuda",
      [](const SpikeLinearParams& p, std::uintptr_t s, std::uintptr_t gout, std::uintptr_t gw,
         int device, std::uintptr_t stream) {
        spike_linear_grad_weight_cuda(p, ptr<const void>(s), ptr<const float>(gout),
                                      ptr<float>(gw), device, stream_ptr(stream));
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "spike_conv2d_forward_cuda",
      [](const SpikeConv2dParams& p, std::uintptr_t s, std::uintptr_t wr, std::uintptr_t bias,
         std::uintptr_t out, int device, std::uintptr_t stream) {
        spike_conv2d_forward_cuda(p, ptr<const void>(s), ptr<const float>(wr),
                                  ptr<const float>(bias), ptr<float>(out), device,
                                  stream_ptr(stream));
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "spike_conv2d_grad_weight_cuda",
      [](const SpikeConv2dParams& p, std::uintptr_t s, std::uintptr_t gout_cl, std::uintptr_t gw,
         int device, std::uintptr_t stream) {
        spike_conv2d_grad_weight_cuda(p, ptr<const void>(s), ptr<const float>(gout_cl),
                                      ptr<float>(gw), device, stream_ptr(stream));
      },
      py::call_guard<py::gil_scoped_release>());
#endif
}

// Packed / pruned low-bit weights: pack/unpack and the packed linear / conv kernels.
void bind_packed(py::module_& m) {
  py::class_<PackedLinearParams>(m, "PackedLinearParams")
      .def(py::init<>())
      .def_readwrite("M", &PackedLinearParams::M)
      .def_readwrite("K", &PackedLinearParams::K)
      .def_readwrite("N", &PackedLinearParams::N)
      .def_readwrite("bits", &PackedLinearParams::bits)
      .def_readwrite("group_size", &PackedLinearParams::group_size)
      .def_readwrite("threads", &PackedLinearParams::threads);
  py::class_<PrunedLinearParams>(m, "PrunedLinearParams")
      .def(py::init<>())
      .def_readwrite("M", &PrunedLinearParams::M)
      .def_readwrite("K", &PrunedLinearParams::K)
      .def_readwrite("N", &PrunedLinearParams::N)
      .def_readwrite("bits", &PrunedLinearParams::bits)
      .def_readwrite("group_size", &PrunedLinearParams::group_size)
      .def_readwrite("index16", &PrunedLinearParams::index16)
      .def_readwrite("threads", &PrunedLinearParams::threads);
  py::class_<PackedConv2dParams>(m, "PackedConv2dParams")
      .def(py::init<>())
      .def_readwrite("NB", &PackedConv2dParams::NB)
      .def_readwrite("C", &PackedConv2dParams::C)
      .def_readwrite("H", &PackedConv2dParams::H)
      .def_readwrite("W", &PackedConv2dParams::W)
      .def_readwrite("O", &PackedConv2dParams::O)
      .def_readwrite("KH", &PackedConv2dParams::KH)
      .def_readwrite("KW", &PackedConv2dParams::KW)
      .def_readwrite("OH", &PackedConv2dParams::OH)
      .def_readwrite("OW", &PackedConv2dParams::OW)
      .def_readwrite("sh", &PackedConv2dParams::sh)
      .def_readwrite("sw", &PackedConv2dParams::sw)
      .def_readwrite("ph", &PackedConv2dParams::ph)
      .def_readwrite("pw", &PackedConv2dParams::pw)
      .def_readwrite("dh", &PackedConv2dParams::dh)
      .def_readwrite("dw", &PackedConv2dParams::dw)
      .def_readwrite("bits", &PackedConv2dParams::bits)
      .def_readwrite("group_size", &PackedConv2dParams::group_size)
      .def_readwrite("threads", &PackedConv2dParams::threads);

  m.def(
      "is_binary_f32_cpu",
      [](std::uintptr_t x, int64_t n) { return is_binary_f32_cpu(ptr<const float>(x), n); },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "pack_cpu",
      [](std::uintptr_t codes, int64_t N, int64_t K, int bits, std::uintptr_t out, int threads) {
        pack_cpu(ptr<const int8_t>(codes), N, K, bits, ptr<uint8_t>(out), threads);
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "unpack_cpu",
      [](std::uintptr_t packed, int64_t N, int64_t K, int bits, std::uintptr_t out, int threads) {
        unpack_cpu(ptr<const uint8_t>(packed), N, K, bits, ptr<int8_t>(out), threads);
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "pack_stream_cpu",
      [](std::uintptr_t codes, int64_t nnz, int bits, std::uintptr_t out) {
        pack_stream_cpu(ptr<const int8_t>(codes), nnz, bits, ptr<uint8_t>(out));
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "packed_linear_cpu",
      [](const PackedLinearParams& p, bool spike, std::uintptr_t x, std::uintptr_t w,
         std::uintptr_t scale, std::uintptr_t bias, std::uintptr_t y) {
        if (spike)
          packed_spike_linear_cpu(p, ptr<const float>(x), ptr<const void>(w),
                                  ptr<const float>(scale), ptr<const float>(bias), ptr<float>(y));
        else
          packed_dense_linear_cpu(p, ptr<const float>(x), ptr<const void>(w),
                                  ptr<const float>(scale), ptr<const float>(bias), ptr<float>(y));
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "pruned_linear_cpu",
      [](const PrunedLinearParams& p, bool spike, std::uintptr_t x, std::uintptr_t row_ptr,
         std::uintptr_t index, std::uintptr_t values, std::uintptr_t scale, std::uintptr_t bias,
         std::uintptr_t y) {
        pruned_linear_cpu(p, spike, ptr<const float>(x), ptr<const int32_t>(row_ptr),
                          ptr<const void>(index), ptr<const void>(values), ptr<const float>(scale),
                          ptr<const float>(bias), ptr<float>(y));
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "pruned_blocks_spike_linear_cpu",
      [](const PrunedLinearParams& p, std::uintptr_t x, std::uintptr_t block_ptr,
         std::uintptr_t block_id, std::uintptr_t block_mask, std::uintptr_t block_code,
         std::uintptr_t codes, std::uintptr_t scale, std::uintptr_t bias, std::uintptr_t y) {
        pruned_blocks_spike_linear_cpu(p, ptr<const float>(x), ptr<const int32_t>(block_ptr),
                                       ptr<const uint16_t>(block_id), ptr<const uint16_t>(block_mask),
                                       ptr<const int32_t>(block_code), ptr<const int8_t>(codes),
                                       ptr<const float>(scale), ptr<const float>(bias), ptr<float>(y));
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "packed_conv2d_cpu",
      [](const PackedConv2dParams& p, bool spike, std::uintptr_t x, std::uintptr_t w,
         std::uintptr_t scale, std::uintptr_t bias, std::uintptr_t y) {
        packed_spike_conv2d_cpu(p, spike, ptr<const float>(x), ptr<const void>(w),
                                ptr<const float>(scale), ptr<const float>(bias), ptr<float>(y));
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "packed_conv2d_chunked_cpu",
      [](const PackedConv2dParams& p, std::uintptr_t x, std::uintptr_t wk, std::uintptr_t scale,
         std::uintptr_t bias, std::uintptr_t y) {
        return packed_spike_conv2d_chunked_cpu(p, ptr<const float>(x), ptr<const uint8_t>(wk),
                                        ptr<const float>(scale), ptr<const float>(bias),
                                        ptr<float>(y));
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "packed_conv2d_chunked_analog_cpu",
      [](const PackedConv2dParams& p, std::uintptr_t x, std::uintptr_t wk, std::uintptr_t row_map,
         std::uintptr_t scale, std::uintptr_t bias, std::uintptr_t y) {
        return packed_conv2d_chunked_analog_cpu(p, ptr<const float>(x), ptr<const uint8_t>(wk),
                                                ptr<const int32_t>(row_map), ptr<const float>(scale),
                                                ptr<const float>(bias), ptr<float>(y));
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "pruned_conv2d_cpu",
      [](const PackedConv2dParams& p, std::uintptr_t x, std::uintptr_t wk, std::uintptr_t row_map,
         std::uintptr_t scale, std::uintptr_t bias, std::uintptr_t y) {
        return pruned_spike_conv2d_cpu(p, ptr<const float>(x), ptr<const uint8_t>(wk),
                                ptr<const int32_t>(row_map), ptr<const float>(scale),
                                ptr<const float>(bias), ptr<float>(y));
      },
      py::call_guard<py::gil_scoped_release>());
#if defined(SPARSESNN_WITH_CUDA)
  m.def(
      "pack_cuda",
      [](std::uintptr_t codes, int64_t N, int64_t K, int bits, std::uintptr_t out, int device,
         std::uintptr_t stream) {
        pack_cuda(ptr<const int8_t>(codes), N, K, bits, ptr<uint8_t>(out), device,
                  stream_ptr(stream));
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "unpack_cuda",
      [](std::uintptr_t packed, int64_t N, int64_t K, int bits, std::uintptr_t out, int device,
         std::uintptr_t stream) {
        unpack_cuda(ptr<const uint8_t>(packed), N, K, bits, ptr<int8_t>(out), device,
                    stream_ptr(stream));
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "packed_linear_cuda",
      [](const PackedLinearParams& p, bool spike, std::uintptr_t x, std::uintptr_t w,
         std::uintptr_t scale, std::uintptr_t bias, std::uintptr_t y, int device,
         std::uintptr_t stream) {
        packed_linear_cuda(p, spike, ptr<const float>(x), ptr<const void>(w),
                           ptr<const float>(scale), ptr<const float>(bias), ptr<float>(y),
                           device, stream_ptr(stream));
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "pruned_linear_cuda",
      [](const PrunedLinearParams& p, bool spike, std::uintptr_t x, std::uintptr_t row_ptr,
         std::uintptr_t index, std::uintptr_t values, std::uintptr_t scale, std::uintptr_t bias,
         std::uintptr_t y, std::uintptr_t work, int device, std::uintptr_t stream) {
        pruned_linear_cuda(p, spike, ptr<const float>(x), ptr<const int32_t>(row_ptr),
                           ptr<const void>(index), ptr<const void>(values),
                           ptr<const float>(scale), ptr<const float>(bias), ptr<float>(y),
                           ptr<float>(work), device, stream_ptr(stream));
      },
      py::call_guard<py::gil_scoped_release>());
  m.def("pruned_linear_cuda_work_floats", &pruned_linear_cuda_work_floats);
  m.def(
      "packed_conv2d_cuda",
      [](const PackedConv2dParams& p, bool spike, std::uintptr_t x, std::uintptr_t w,
         std::uintptr_t scale, std::uintptr_t bias, std::uintptr_t y, int device,
         std::uintptr_t stream) {
        packed_conv2d_cuda(p, spike, ptr<const float>(x), ptr<const void>(w),
                           ptr<const float>(scale), ptr<const float>(bias), ptr<float>(y),
                           device, stream_ptr(stream));
      },
      py::call_guard<py::gil_scoped_release>());
#endif
}

// Event-driven pair STDP (in place on an input-major weight).
void bind_stdp(py::module_& m) {
  py::class_<StdpParams>(m, "StdpParams")
      .def(py::init<>())
      .def_readwrite("K", &StdpParams::K)
      .def_readwrite("N", &StdpParams::N)
      .def_readwrite("eta_pre", &StdpParams::eta_pre)
      .def_readwrite("eta_post", &StdpParams::eta_post)
      .def_readwrite("w_min", &StdpParams::w_min)
      .def_readwrite("w_max", &StdpParams::w_max)
      .def_readwrite("step", &StdpParams::step)
      .def_readwrite("rounding", &StdpParams::rounding)
      .def_readwrite("seed", &StdpParams::seed)
      .def_readwrite("threads", &StdpParams::threads);
  m.def(
      "stdp_update_cpu",
      [](const StdpParams& p, std::uintptr_t w, std::uintptr_t pre, std::uintptr_t post,
         std::uintptr_t x_pre, std::uintptr_t x_post) {
        return stdp_update_cpu(p, ptr<float>(w), ptr<const float>(pre), ptr<const float>(post),
                               ptr<const float>(x_pre), ptr<const float>(x_post));
      },
      py::call_guard<py::gil_scoped_release>());
  py::class_<StdpPresentParams>(m, "StdpPresentParams")
      .def(py::init<>())
      .def_readwrite("T", &StdpPresentParams::T)
      .def_readwrite("stdp", &StdpPresentParams::stdp)
      .def_readwrite("decay_v", &StdpPresentParams::decay_v)
      .def_readwrite("decay_pre", &StdpPresentParams::decay_pre)
      .def_readwrite("decay_post", &StdpPresentParams::decay_post)
      .def_readwrite("v_th", &StdpPresentParams::v_th)
      .def_readwrite("v_reset", &StdpPresentParams::v_reset)
      .def_readwrite("v_min", &StdpPresentParams::v_min)
      .def_readwrite("theta_plus", &StdpPresentParams::theta_plus)
      .def_readwrite("w_inh", &StdpPresentParams::w_inh)
      .def_readwrite("theta_step", &StdpPresentParams::theta_step)
      .def_readwrite("theta_lo", &StdpPresentParams::theta_lo)
      .def_readwrite("theta_hi", &StdpPresentParams::theta_hi)
      .def_readwrite("theta_rounding", &StdpPresentParams::theta_rounding)
      .def_readwrite("theta_seed", &StdpPresentParams::theta_seed)
      .def_readwrite("theta_offset", &StdpPresentParams::theta_offset);
  m.def(
      "stdp_present_cpu",
      [](const StdpPresentParams& p, std::uintptr_t w, std::uintptr_t theta, std::uintptr_t s_in,
         std::uintptr_t counts) {
        const StdpPresentStats st = stdp_present_cpu(p, ptr<float>(w), ptr<float>(theta),
                                                     ptr<const float>(s_in), ptr<float>(counts));
        return std::make_tuple(st.input_spikes, st.output_spikes, st.stdp_updates);
      },
      py::call_guard<py::gil_scoped_release>());
#if defined(SPARSESNN_WITH_CUDA)
  m.def(
      "stdp_update_cuda",
      [](const StdpParams& p, std::uintptr_t w, std::uintptr_t pre, std::uintptr_t post,
         std::uintptr_t x_pre, std::uintptr_t x_post, int device, std::uintptr_t stream) {
        stdp_update_cuda(p, ptr<float>(w), ptr<const float>(pre), ptr<const float>(post),
                         ptr<const float>(x_pre), ptr<const float>(x_post), device,
                         stream_ptr(stream));
      },
      py::call_guard<py::gil_scoped_release>());
#endif
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "sparsesnn compiled kernels (torch-free; called through sparsesnn.ops)";
  m.def("build_info", &build_info);
  bind_lif(m);
  bind_spike_ops(m);
  bind_packed(m);
  bind_stdp(m);
}
