#!/usr/bin/env python3
"""Compare two moe-train dumps (--dump-step N --dump-dir DIR) tensor by tensor.

    launch/compare_dumps.py REFERENCE_DIR OTHER_DIR [--step N] [--tol 1e-4] [--loss-tol 1e-5]

For every parameter and gradient: max |a - b| / (max |b| + 1e-6), with b the reference;
prints one line per tensor (OK / NOT OK) and exits 1 if any tensor or the loss is out of
tolerance. Tokens and targets must be identical: both runs saw the same global batch.
"""
import argparse, glob, json, os, signal, sys
import numpy as np
from safetensors.numpy import load_file


def dump_file(d, step):
    if step is not None:
        return os.path.join(d, "step-%06d.safetensors" % step)
    files = sorted(glob.glob(os.path.join(d, "step-*.safetensors")))
    if len(files) != 1:
        sys.exit("compare_dumps: %s holds %d dumps; pass --step" % (d, len(files)))
    return files[0]


def main():
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # quiet when piped into head
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("reference")
    ap.add_argument("other")
    ap.add_argument("--step", type=int)
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--loss-tol", type=float, default=1e-5)
    ap.add_argument("--quiet", action="store_true", help="print only the failures and the summary line")
    a = ap.parse_args()
    ref, other = load_file(dump_file(a.reference, a.step)), load_file(dump_file(a.other, a.step))
    failures = []
    if set(ref) != set(other):
        failures.append("tensor names differ: only in reference %s, only in other %s"
                        % (sorted(set(ref) - set(other)), sorted(set(other) - set(ref))))
    worst = 0.0
    for name in sorted(set(ref) & set(other)):
        b, x = ref[name], other[name]
        if b.shape != x.shape:
            failures.append("%s: shape %s vs %s" % (name, b.shape, x.shape))
            continue
        if name in ("tokens", "targets"):
            if not np.array_equal(b, x):
                failures.append("%s differ: the runs did not see the same batch" % name)
            continue
        err = float(np.max(np.abs(x.astype(np.float64) - b)) / (np.max(np.abs(b)) + 1e-6)) if b.size else 0.0
        worst = max(worst, err)
        ok = err < a.tol
        if not ok:
            failures.append("%s: %.3e" % (name, err))
        if not a.quiet or not ok:
            print("%-36s %.3e %s" % (name, err, "OK" if ok else "NOT OK"))
    lr = json.load(open(os.path.join(a.reference, "loss.json")))["loss"]
    lo = json.load(open(os.path.join(a.other, "loss.json")))["loss"]
    loss_err = abs(lo - lr) / abs(lr)
    if loss_err >= a.loss_tol:
        failures.append("loss %.9f vs %.9f (relative %.3e)" % (lo, lr, loss_err))
    print("compare_dumps: %d tensors, worst %.3e (tolerance %.0e), loss relative difference %.3e (tolerance %.0e): %s"
          % (len(ref), worst, a.tol, loss_err, a.loss_tol, "OK" if not failures else "FAILED"))
    for f in failures:
        print("  " + f)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
