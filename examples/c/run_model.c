/* Classify inputs with an exported sparsesnn model, no Python involved.
 *
 *   run_model MODEL.ssnnp INPUTS.f32 [THREADS]
 *
 * INPUTS.f32 holds raw little-endian float32 samples, each of the model's per-sample input
 * size (for the demo MLP: 64 pixel values in [0, 1]). Prints one predicted class per line
 * (the argmax of the model's output), or an error message and a non-zero exit code.
 *
 * Build (paths from python -c "import sparsesnn.runtime as r; print(r.include_path(), r.library_path())"):
 *   gcc -O2 run_model.c -I INCLUDE_DIR -L LIB_DIR -lsparsesnn_runtime -Wl,-rpath,LIB_DIR -o run_model
 */
#include <stdio.h>
#include <stdlib.h>

#include "sparsesnn_runtime.h"

static int fail(const char* what) {
  fprintf(stderr, "run_model: %s: %s\n", what, ssnn_last_error());
  return 1;
}

int main(int argc, char** argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s MODEL.ssnnp INPUTS.f32 [THREADS]\n", argv[0]);
    return 2;
  }
  const int threads = argc > 3 ? atoi(argv[3]) : 1;
  ssnn_model* model = NULL;
  if (ssnn_load_file(argv[1], &model) != SSNN_OK) return fail("load");

  int64_t in_dims[8], out_dims[8];
  int in_rank, in_axis, out_rank, out_axis;
  if (ssnn_input_shape(model, in_dims, 8, &in_rank, &in_axis) != SSNN_OK ||
      ssnn_output_shape(model, out_dims, 8, &out_rank, &out_axis) != SSNN_OK)
    return fail("shape");
  if (in_axis != 0 || out_axis != 0 || out_rank != 1) {
    fprintf(stderr, "run_model: expects a model taking [B, ...] and giving [B, classes]\n");
    return 1;
  }
  int64_t in_size = 1;
  for (int i = 0; i < in_rank; ++i) in_size *= in_dims[i];
  const int64_t classes = out_dims[0];

  FILE* f = fopen(argv[2], "rb");
  if (!f) {
    fprintf(stderr, "run_model: cannot open %s\n", argv[2]);
    return 1;
  }
  fseek(f, 0, SEEK_END);
  const long bytes = ftell(f);
  fseek(f, 0, SEEK_SET);
  const int64_t batch = bytes / (long)(sizeof(float) * in_size);
  if (batch < 1 || bytes % (long)(sizeof(float) * in_size) != 0) {
    fprintf(stderr, "run_model: %s: %ld bytes is not a whole number of %lld-float samples\n",
            argv[2], bytes, (long long)in_size);
    return 1;
  }
  float* x = malloc(bytes);
  float* y = malloc(sizeof(float) * batch * classes);
  if (!x || !y || fread(x, 1, bytes, f) != (size_t)bytes) {
    fprintf(stderr, "run_model: cannot read %s\n", argv[2]);
    return 1;
  }
  fclose(f);

  if (ssnn_run(model, x, batch, y, threads) != SSNN_OK) return fail("run");
  for (int64_t b = 0; b < batch; ++b) {
    const float* row = y + b * classes;
    int64_t best = 0;
    for (int64_t c = 1; c < classes; ++c)
      if (row[c] > row[best]) best = c;
    printf("%lld\n", (long long)best);
  }
  free(x);
  free(y);
  ssnn_free(model);
  return 0;
}
