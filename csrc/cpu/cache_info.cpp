#include "sparsesnn/cache_info.h"

#include <unistd.h>

#include <fstream>
#include <string>

namespace sparsesnn {
namespace {

// Size in bytes of /sys/devices/system/cpu/cpu0/cache/index<i> if it is a data/unified cache of
// `level`, else 0. The file holds e.g. "48K" or "2048K" or "32M".
int64_t sysfs_cache(int level) {
  for (int i = 0; i < 8; ++i) {
    const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(i) + "/";
    std::ifstream lv(dir + "level"), ty(dir + "type"), sz(dir + "size");
    int l = 0;
    std::string type, size;
    if (!(lv >> l) || !(ty >> type) || !(sz >> size) || l != level || type == "Instruction") continue;
    int64_t v = 0;
    size_t pos = 0;
    try {
      v = std::stoll(size, &pos);
    } catch (...) {
      continue;
    }
    const char unit = pos < size.size() ? size[pos] : 'B';
    return unit == 'K' ? v << 10 : unit == 'M' ? v << 20 : unit == 'G' ? v << 30 : v;
  }
  return 0;
}

// sysfs first: it describes the cache instance this core shares (a core complex's L3), where
// glibc's sysconf may sum every L3 of the package (seen: 384 MiB on a 32 MiB-per-CCX EPYC).
int64_t cache_bytes(int level, int64_t fallback) {
  const int64_t s = sysfs_cache(level);
  if (s > 0) return s;
#if defined(_SC_LEVEL1_DCACHE_SIZE) && defined(_SC_LEVEL2_CACHE_SIZE) && defined(_SC_LEVEL3_CACHE_SIZE)
  const int name = level == 1 ? _SC_LEVEL1_DCACHE_SIZE : level == 2 ? _SC_LEVEL2_CACHE_SIZE
                                                                     : _SC_LEVEL3_CACHE_SIZE;
  const long v = sysconf(name);
  if (v > 0) return v;
#endif
  return fallback;
}

}  // namespace

const CacheSizes& cache_sizes() {
  static const CacheSizes sizes{cache_bytes(1, int64_t(32) << 10), cache_bytes(2, int64_t(1) << 20),
                                cache_bytes(3, int64_t(8) << 20)};
  return sizes;
}

}  // namespace sparsesnn
