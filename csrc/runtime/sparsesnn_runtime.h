/* sparsesnn native runtime: run an exported sparsesnn model (a ".ssnnp" plan file written by
 * sparsesnn.runtime.export) from C, without Python or libtorch.
 *
 *   ssnn_model* m = NULL;
 *   if (ssnn_load_file("model.ssnnp", &m) != SSNN_OK) { puts(ssnn_last_error()); return 1; }
 *   ssnn_input_shape(m, dims, 8, &rank, &batch_axis);   // per-sample shape, no batch dim
 *   ssnn_run(m, input, batch, output, 1);               // float buffers, C order
 *   ssnn_free(m);
 *
 * A model is immutable once loaded: ssnn_run may be called from several threads at once on the
 * same model (each call takes a private, reused workspace). Every function returns a status;
 * on failure ssnn_last_error() (per thread) says why. Loading a truncated, corrupted or foreign
 * file returns an error, never crashes. The file format is specified in csrc/runtime/format.h.
 */
#ifndef SPARSESNN_RUNTIME_H
#define SPARSESNN_RUNTIME_H

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#define SSNN_API __declspec(dllexport)
#else
#define SSNN_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ssnn_model ssnn_model; /* opaque */

typedef enum ssnn_status {
  SSNN_OK = 0,
  SSNN_ERR_IO = 1,        /* file cannot be opened or read */
  SSNN_ERR_FORMAT = 2,    /* not a plan file, truncated, corrupted or inconsistent */
  SSNN_ERR_VERSION = 3,   /* a plan format version this library does not read */
  SSNN_ERR_ARGUMENT = 4,  /* bad argument (null pointer, batch < 1, small dims array) */
  SSNN_ERR_INPUT = 5,     /* input values the model cannot take (e.g. non-binary spikes) */
  SSNN_ERR_MEMORY = 6,    /* allocation failed */
  SSNN_ERR_INTERNAL = 7
} ssnn_status;

/* Library version string, e.g. "0.1.0", and the newest plan format version it reads. */
SSNN_API const char* ssnn_version(void);
SSNN_API uint32_t ssnn_format_version(void);

/* Message of the last failed call on this thread ("" if none). Valid until the next call. */
SSNN_API const char* ssnn_last_error(void);

SSNN_API int ssnn_load_file(const char* path, ssnn_model** out);
SSNN_API int ssnn_load_memory(const void* data, size_t size, ssnn_model** out);
SSNN_API void ssnn_free(ssnn_model* model);

/* Per-sample shape (batch dimension left out) into dims[0..*rank). *batch_axis is where the
 * batch dimension sits in the full C-order buffer: 0 for [B, ...], 1 for time-major
 * [T, B, ...] (dims[0] is then T). */
SSNN_API int ssnn_input_shape(const ssnn_model* model, int64_t* dims, int max_dims, int* rank,
                              int* batch_axis);
SSNN_API int ssnn_output_shape(const ssnn_model* model, int64_t* dims, int max_dims, int* rank,
                               int* batch_axis);

/* Runs the whole network (all layers, all timesteps) on `batch` samples. input and output are
 * contiguous float buffers of the full shapes above; threads >= 1 (OpenMP threads the
 * kernels may use). */
SSNN_API int ssnn_run(ssnn_model* model, const float* input, int64_t batch, float* output,
                      int threads);

/* Bytes of weights, scales and indices the plan reads per call (the memory floor's numerator). */
SSNN_API int64_t ssnn_weight_bytes(const ssnn_model* model);

#ifdef __cplusplus
}
#endif
#endif /* SPARSESNN_RUNTIME_H */
