// The C ABI (sparsesnn_runtime.h): C++ exceptions never cross it; each becomes a status plus a
// per-thread message.
#include <cstdio>
#include <fstream>
#include <new>
#include <string>
#include <vector>

#include "format.h"
#include "plan.h"
#include "sparsesnn_runtime.h"

#ifndef SPARSESNN_VERSION
#define SPARSESNN_VERSION "0.1.0.dev"
#endif

struct ssnn_model {
  std::unique_ptr<sparsesnn::runtime::Plan> plan;
};

namespace {

thread_local std::string g_error;

int set_error(int code, const std::string& msg) {
  g_error = msg;
  return code;
}

template <typename F>
int guarded(F&& body) {
  using namespace sparsesnn;
  try {
    g_error.clear();
    return body();
  } catch (const runtime::VersionError& e) {
    return set_error(SSNN_ERR_VERSION, e.what());
  } catch (const plan_format::FormatError& e) {
    return set_error(SSNN_ERR_FORMAT, e.what());
  } catch (const runtime::InputError& e) {
    return set_error(SSNN_ERR_INPUT, e.what());
  } catch (const std::bad_alloc&) {
    return set_error(SSNN_ERR_MEMORY, "out of memory");
  } catch (const std::exception& e) {
    return set_error(SSNN_ERR_INTERNAL, e.what());
  } catch (...) {
    return set_error(SSNN_ERR_INTERNAL, "unknown error");
  }
}

int shape_of(const sparsesnn::runtime::Shape& s, uint32_t T, int64_t* dims, int max_dims,
             int* rank, int* batch_axis) {
  if (!dims || !rank || !batch_axis) return set_error(SSNN_ERR_ARGUMENT, "dims, rank, batch_axis: null pointer");
  const int r = static_cast<int>(s.dims.size()) + (s.time ? 1 : 0);
  if (max_dims < r)
    return set_error(SSNN_ERR_ARGUMENT, "max_dims: expected at least " + std::to_string(r) +
                                            ", got " + std::to_string(max_dims));
  int i = 0;
  if (s.time) dims[i++] = T;
  for (int64_t d : s.dims) dims[i++] = d;
  *rank = r;
  *batch_axis = s.time ? 1 : 0;
  return SSNN_OK;
}

}  // namespace

extern "C" {

const char* ssnn_version(void) { return SPARSESNN_VERSION; }
uint32_t ssnn_format_version(void) { return sparsesnn::plan_format::kVersion; }
const char* ssnn_last_error(void) { return g_error.c_str(); }

int ssnn_load_memory(const void* data, size_t size, ssnn_model** out) {
  return guarded([&] {
    if (!out) return set_error(SSNN_ERR_ARGUMENT, "out: null pointer");
    *out = nullptr;
    if (!data && size) return set_error(SSNN_ERR_ARGUMENT, "data: null pointer");
    auto m = std::make_unique<ssnn_model>();
    m->plan = sparsesnn::runtime::Plan::load(static_cast<const uint8_t*>(data), size);
    *out = m.release();
    return static_cast<int>(SSNN_OK);
  });
}

int ssnn_load_file(const char* path, ssnn_model** out) {
  return guarded([&] {
    if (!path || !out) return set_error(SSNN_ERR_ARGUMENT, "path, out: null pointer");
    *out = nullptr;
    std::ifstream f(path, std::ios::binary);
    if (!f) return set_error(SSNN_ERR_IO, std::string("cannot open ") + path);
    std::vector<char> buf((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    if (f.bad()) return set_error(SSNN_ERR_IO, std::string("cannot read ") + path);
    const int rc = ssnn_load_memory(buf.data(), buf.size(), out);
    if (rc != SSNN_OK) g_error = std::string(path) + ": " + g_error;
    return rc;
  });
}

void ssnn_free(ssnn_model* model) { delete model; }

int ssnn_input_shape(const ssnn_model* m, int64_t* dims, int max_dims, int* rank, int* batch_axis) {
  return guarded([&] {
    if (!m) return set_error(SSNN_ERR_ARGUMENT, "model: null pointer");
    return shape_of(m->plan->input, m->plan->T, dims, max_dims, rank, batch_axis);
  });
}

int ssnn_output_shape(const ssnn_model* m, int64_t* dims, int max_dims, int* rank, int* batch_axis) {
  return guarded([&] {
    if (!m) return set_error(SSNN_ERR_ARGUMENT, "model: null pointer");
    return shape_of(m->plan->output, m->plan->T, dims, max_dims, rank, batch_axis);
  });
}

int ssnn_run(ssnn_model* m, const float* input, int64_t batch, float* output, int threads) {
  return guarded([&] {
    if (!m || !input || !output) return set_error(SSNN_ERR_ARGUMENT, "model, input, output: null pointer");
    if (batch < 1 || batch > (int64_t(1) << 24))
      return set_error(SSNN_ERR_ARGUMENT, "batch: expected 1..2^24, got " + std::to_string(batch));
    if (threads < 1) return set_error(SSNN_ERR_ARGUMENT, "threads: expected >= 1, got " + std::to_string(threads));
    m->plan->run(input, batch, output, threads);
    return static_cast<int>(SSNN_OK);
  });
}

int64_t ssnn_weight_bytes(const ssnn_model* m) { return m ? m->plan->weight_bytes : -1; }

}  // extern "C"
