// CMPI shim over Open MPI's mpi.h.
//
// Open MPI's predefined handles (MPI_COMM_WORLD, MPI_FLOAT, MPI_SUM, ...) are macros
// that expand to the addresses of global structs; Swift cannot import such macros.
// Each one is exposed here through a static inline accessor instead.
#pragma once
// For sched_getaffinity and the CPU_* macros (this header is its own translation unit).
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <sched.h>
#include <mpi.h>

static inline MPI_Comm cmpi_comm_world(void) { return MPI_COMM_WORLD; }
static inline MPI_Comm cmpi_comm_null(void) { return MPI_COMM_NULL; }

static inline MPI_Datatype cmpi_float(void) { return MPI_FLOAT; }
static inline MPI_Datatype cmpi_double(void) { return MPI_DOUBLE; }
static inline MPI_Datatype cmpi_int32(void) { return MPI_INT32_T; }
static inline MPI_Datatype cmpi_int64(void) { return MPI_INT64_T; }
static inline MPI_Datatype cmpi_uint8(void) { return MPI_UINT8_T; }

static inline MPI_Op cmpi_op_sum(void) { return MPI_SUM; }
static inline MPI_Op cmpi_op_max(void) { return MPI_MAX; }
static inline MPI_Op cmpi_op_min(void) { return MPI_MIN; }

static inline MPI_Request cmpi_request_null(void) { return MPI_REQUEST_NULL; }
static inline MPI_Status *cmpi_status_ignore(void) { return MPI_STATUS_IGNORE; }
static inline void *cmpi_in_place(void) { return MPI_IN_PLACE; }
static inline int cmpi_thread_funneled(void) { return MPI_THREAD_FUNNELED; }
static inline int cmpi_success(void) { return MPI_SUCCESS; }
static inline int cmpi_undefined(void) { return MPI_UNDEFINED; }
static inline int cmpi_any_tag(void) { return MPI_ANY_TAG; }
static inline MPI_Errhandler cmpi_errors_return(void) { return MPI_ERRORS_RETURN; }

static inline MPI_Op cmpi_op_bor(void) { return MPI_BOR; }
static inline int cmpi_comm_type_shared(void) { return MPI_COMM_TYPE_SHARED; }
static inline MPI_Info cmpi_info_null(void) { return MPI_INFO_NULL; }

// The CPUs this process may run on, as a bit mask of `n` bytes (CPU i is bit i % 8 of byte
// i / 8); 0 on success.
static inline int cmpi_affinity_mask(unsigned char *bytes, int n) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof(set), &set) != 0) return -1;
    for (int i = 0; i < n; i++) bytes[i] = 0;
    for (int cpu = 0; cpu < CPU_SETSIZE && cpu / 8 < n; cpu++)
        if (CPU_ISSET(cpu, &set)) bytes[cpu / 8] |= (unsigned char)(1u << (cpu % 8));
    return 0;
}
