# Environment for running moe-train under Open MPI on a small machine; sourced by the
# launch scripts and mirrored by the Makefile.
# - one BLAS thread per rank: ranks are processes sharing the cores;
# - Open MPI refuses to run as root without these two confirmations (CI runs as root);
# - 16 ranks on 2 cores needs oversubscription allowed;
# - no 1 s grace between SIGTERM and SIGKILL when a rank fails: ranks have nothing to
#   flush (files are written under a temporary name, then renamed).
export OPENBLAS_NUM_THREADS=1
export OMPI_ALLOW_RUN_AS_ROOT=1
export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1
export OMPI_MCA_odls_base_sigkill_timeout=0
