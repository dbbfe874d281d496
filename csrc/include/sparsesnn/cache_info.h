// Data cache sizes of the CPU this process runs on, read once at run time, so chunk and buffer
// sizes follow the machine instead of constants tuned on one chip.
#pragma once
#include <cstdint>

namespace sparsesnn {

struct CacheSizes {
  int64_t l1d;  // per core
  int64_t l2;   // per core (or per core pair, as the OS reports it)
  int64_t l3;   // as the OS reports it: a socket's or a core complex's
};

// sysconf where glibc answers, else /sys/devices/system/cpu/cpu0/cache, else conservative
// defaults (32 KiB, 1 MiB, 8 MiB).
const CacheSizes& cache_sizes();

}  // namespace sparsesnn
