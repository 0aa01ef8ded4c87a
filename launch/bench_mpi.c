/* The reference for `moe-train bench-comm`: the same operations, sizes and timing with
 * bare blocking MPI calls. Built by `make bench` with mpicc. Prints JSON. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static double timed(void (*op)(void *), void *ctx, int iterations) {
    op(ctx);
    MPI_Barrier(MPI_COMM_WORLD);
    double t0 = MPI_Wtime();
    for (int i = 0; i < iterations; i++) op(ctx);
    double mine = (MPI_Wtime() - t0) / iterations, slowest;
    MPI_Allreduce(&mine, &slowest, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    return slowest;
}

typedef struct { float *send, *recv; int per, n, rank; int *counts, *displs; } Ctx;
static void all_reduce(void *p) { Ctx *c = p; MPI_Allreduce(MPI_IN_PLACE, c->recv, c->per * c->n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD); }
static void reduce_scatter(void *p) { Ctx *c = p; MPI_Reduce_scatter_block(c->send, c->recv, c->per, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD); }
static void all_gather(void *p) { Ctx *c = p; MPI_Allgather(c->send, c->per, MPI_FLOAT, c->recv, c->per, MPI_FLOAT, MPI_COMM_WORLD); }
static void all_to_all_v(void *p) { Ctx *c = p; MPI_Alltoallv(c->send, c->counts, c->displs, MPI_FLOAT, c->recv, c->counts, c->displs, MPI_FLOAT, MPI_COMM_WORLD); }
/* The non-blocking all-reduce, completed with MPI_Wait: the algorithm moe-train's
 * Communicator gets from Open MPI (libnbc), for telling algorithm from polling costs. */
static void all_reduce_nb(void *p) {
    Ctx *c = p;
    MPI_Request r;
    MPI_Iallreduce(MPI_IN_PLACE, c->recv, c->per * c->n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &r);
    MPI_Wait(&r, MPI_STATUS_IGNORE);
}
static void send_recv(void *p) {
    Ctx *c = p;
    int next = (c->rank + 1) % c->n, prev = (c->rank + c->n - 1) % c->n;
    MPI_Sendrecv(c->send, c->per * c->n, MPI_FLOAT, next, 1, c->recv, c->per * c->n, MPI_FLOAT, prev, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int n, rank, quick = argc > 1 && strcmp(argv[1], "--quick") == 0;
    MPI_Comm_size(MPI_COMM_WORLD, &n);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    int sizes[] = {8, 64, 512, 4096, 32768, 262144, 2097152, 16777216}, quick_sizes[] = {8, 65536};
    int count = quick ? 2 : 8;
    if (rank == 0) printf("{\"np\": %d, \"results\": [", n);
    int first = 1;
    for (int s = 0; s < count; s++) {
        int bytes = quick ? quick_sizes[s] : sizes[s];
        int floats = bytes / 4 > n ? bytes / 4 : n, per = floats / n;
        int iterations = (quick ? 4 : 64) * 1048576 / bytes;
        if (iterations < 3) iterations = 3;
        if (iterations > 200) iterations = 200;
        Ctx c = {malloc(sizeof(float) * per * n), malloc(sizeof(float) * per * n), per, n, rank,
                 malloc(sizeof(int) * n), malloc(sizeof(int) * n)};
        for (int i = 0; i < per * n; i++) { c.send[i] = 1; c.recv[i] = 1; }
        for (int i = 0; i < n; i++) { c.counts[i] = per; c.displs[i] = i * per; }
        const char *names[] = {"all-reduce", "reduce-scatter", "all-gather", "all-to-all-v", "send-recv", "all-reduce (MPI_Iallreduce)"};
        void (*ops[])(void *) = {all_reduce, reduce_scatter, all_gather, all_to_all_v, send_recv, all_reduce_nb};
        for (int o = 0; o < 6; o++) {
            double t = timed(ops[o], &c, iterations);
            if (rank == 0) { printf("%s{\"op\": \"%s\", \"bytes\": %d, \"seconds\": %.9g}", first ? "" : ", ", names[o], per * n * 4, t); first = 0; }
        }
        free(c.send); free(c.recv); free(c.counts); free(c.displs);
    }
    if (rank == 0) printf("]}\n");
    MPI_Finalize();
    return 0;
}
