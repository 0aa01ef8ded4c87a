// CBLAS shim: Debian's libopenblas-dev puts cblas.h on the include path given by
// `pkg-config --cflags openblas`. openblas_set_num_threads / openblas_get_num_threads
// let the runtime check that each rank uses exactly one BLAS thread.
#pragma once
#include <cblas.h>
