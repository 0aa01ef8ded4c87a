// CBLAS shim: Debian's libopenblas-dev puts cblas.h on the include path given by
// `pkg-config --cflags openblas`. openblas_set_num_threads / openblas_get_num_threads
// let the runtime check that each rank uses exactly one BLAS thread.
#pragma once
#include <cblas.h>

// glibc's allocator knobs (mallopt), for how Tensor's storage is allocated.
#include <malloc.h>
// Returns 1 when glibc accepted both settings.
static inline int moe_keep_large_allocations_in_heap(int mmap_threshold, int trim_threshold) {
    return mallopt(M_MMAP_THRESHOLD, mmap_threshold) == 1 && mallopt(M_TRIM_THRESHOLD, trim_threshold) == 1;
}
