#!/usr/bin/env python3
"""Merges the measurements of launch/bench.sh into one table and bench.json.

    bench_report.py TMPDIR OUT.json CORES
"""
import glob, json, os, sys


def load(path):
    with open(path) as f:
        return json.load(f)


# Instruction groups of a step, by symbol (first match wins). Swift symbols carry their module
# (`$s9Emulation...`): "emulator code" is what the Emulation module executes itself, without
# the runtime calls it makes; the bookkeeping figure of the table is the whole difference
# between the same step with and without the clock.
INSTRUCTION_GROUPS = [
    ("emulator code", ("$s9Emulation", "$s8Parallel7TimedAs")),
    ("GEMM", ("sgemm_", "sgemv_")),
    ("GELU", ("FeedForwardO4gelu", "FeedForwardO12geluBackward")),
    ("softmax", ("VectorMathO10expShifted", "VectorMathO7maximum", "VectorMathO5scale")),
    ("optimizer", ("AdamW",)),
    ("memset/memcpy", ("memset", "memmove", "memcpy")),
    ("allocation and Swift runtime", ("malloc", "free", "swift_", "libswiftCore")),
]


def instruction_profile(path):
    """Total and per-group instructions of one step from `callgrind_annotate --threshold=100`."""
    import re
    total, groups, top = None, {}, []
    line_re = re.compile(r"^\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(.*)$")
    with open(path) as f:
        for line in f:
            m = line_re.match(line)
            if not m:
                continue
            count, what = int(m.group(1).replace(",", "")), m.group(2)
            if what.strip() == "PROGRAM TOTALS":
                total = count
                continue
            if count == total:
                continue  # the callers above the step (main ... Launcher.train) carry the dump's total
            name = next((g for g, keys in INSTRUCTION_GROUPS if any(k in what for k in keys)), "other")
            groups[name] = groups.get(name, 0) + count
            top.append((count, what.split(" [")[0].split(":", 1)[-1]))
    if not total:
        sys.exit("bench_report: no PROGRAM TOTALS in %s" % path)
    top.sort(reverse=True)
    return {"instructions_per_step": total, "groups": groups, "top": [{"instructions": c, "function": w} for c, w in top[:10]]}


def best_of_rounds(tmp, kind, np_):
    """The results of every round of comm-KIND-NP-R.json, each (op, bytes) at its best time."""
    best = {}
    paths = sorted(p for p in os.listdir(tmp) if p.startswith("comm-%s-%d-" % (kind, np_)))
    if not paths:
        sys.exit("bench_report: no comm-%s-%d-*.json in %s" % (kind, np_, tmp))
    for p in paths:
        for r in load(os.path.join(tmp, p))["results"]:
            key = (r["op"], r["bytes"])
            if key not in best or r["seconds"] < best[key]["seconds"]:
                best[key] = r
    return list(best.values())


def main():
    tmp, out, cores = sys.argv[1], sys.argv[2], int(sys.argv[3])
    local = load(os.path.join(tmp, "local.json"))
    report = dict(local)
    rows = []  # (item, figure, reference/target, verdict)

    # 1. GEMM path
    g = local["gemm"]
    worst = min(g["shapes"], key=lambda s: s["ratio"])
    rows.append(("GEMM path / bare sgemm (worst of %d shapes)" % len(g["shapes"]), "%.3f (%s)" % (worst["ratio"], worst["shape"]),
                 ">= 0.90", worst["ratio"] >= 0.90))
    rows.append(("bare single-thread sgemm 1024^3", "%.1f GFLOP/s" % g["bare_sgemm_gflops_1024"], "this CPU", None))

    # 2. Step breakdown
    b = local["step_breakdown_s"]
    total = sum(b.values())
    parts = ", ".join("%s %.0f%%" % (k, 100 * v / total) for k, v in sorted(b.items(), key=lambda kv: -kv[1]))
    rows.append(("non-GEMM share of a step", "%.1f%% (%s)" % (100 * local["non_gemm_fraction"], parts), "< 35%",
                 local["non_gemm_fraction"] < 0.35))

    # 3. Collectives against bare MPI
    comm = {}
    worst_large, worst_small = 0.0, 0.0
    for np_ in (2, 4, 16):
        s = best_of_rounds(tmp, "swift", np_)
        c = best_of_rounds(tmp, "c", np_)
        ref = {(r["op"], r["bytes"]): r["seconds"] for r in c}
        entries = []
        for r in s:
            t_ref = ref.get((r["op"], r["bytes"]))
            if not t_ref:
                continue
            ratio = r["seconds"] / t_ref
            entries.append({"op": r["op"], "bytes": r["bytes"], "seconds": r["seconds"], "seconds_mpi": t_ref, "ratio": ratio,
                            "gbytes_per_s": r["bytes"] / r["seconds"] / 1e9})
            if r["bytes"] >= 65536:
                worst_large = max(worst_large, ratio)
            else:
                worst_small = max(worst_small, (r["seconds"] - 1e-6) / t_ref)
        comm[str(np_)] = entries
    nb = {}
    for np_ in (2, 4, 16):
        c = best_of_rounds(tmp, "c", np_)
        blocking = {r["bytes"]: r["seconds"] for r in c if r["op"] == "all-reduce"}
        nb[str(np_)] = [{"bytes": r["bytes"], "iallreduce_over_allreduce": r["seconds"] / blocking[r["bytes"]]}
                        for r in c if r["op"] == "all-reduce (MPI_Iallreduce)" and blocking.get(r["bytes"])]
    report["mpi_nonblocking_allreduce"] = nb
    worst_nb = max((e["iallreduce_over_allreduce"] for v in nb.values() for e in v if e["bytes"] >= 65536), default=0)
    report["collectives"] = comm
    report["comm_slowdown_max_large"] = worst_large
    report["comm_small_excess_max"] = worst_small
    rows.append(("Communicator / bare MPI, >= 64 KiB (worst)", "%.2fx" % worst_large, "<= 1.05x", worst_large <= 1.05))
    rows.append(("Communicator / bare MPI, < 64 KiB (worst, after 1 us)", "%.2fx" % worst_small, "<= 1.10x", worst_small <= 1.10))
    # By rank count: with a core per rank the Communicator makes MPI's blocking calls; with
    # more ranks than cores it makes non-blocking ones and sleeps while it waits.
    per_np = {}
    for np_, entries in comm.items():
        large = [e["ratio"] for e in entries if e["bytes"] >= 65536]
        small = [(e["seconds"] - 1e-6) / e["seconds_mpi"] for e in entries if e["bytes"] < 65536]
        per_np[np_] = {"large_worst": max(large, default=0), "small_worst": max(small, default=0)}
        waits = {load(f).get("waits") for f in glob.glob(os.path.join(tmp, "comm-swift-%s-*.json" % np_))}
        how = "%s ranks on %d cores, waits: %s" % (np_, cores, "/".join(sorted(w or "?" for w in waits)))
        rows.append(("  on %s ranks (%s)" % (np_, how), "%.2fx; %.2fx" % (per_np[np_]["large_worst"], per_np[np_]["small_worst"]),
                     ">= 64 KiB; < 64 KiB", None))
    report["comm_worst_by_ranks"] = per_np
    rows.append(("bare MPI_Iallreduce / MPI_Allreduce, >= 64 KiB (worst)", "%.2fx" % worst_nb, "the non-blocking algorithm's own cost", None))

    # 4. Oversubscription, 6. memory
    s16, s1 = load(os.path.join(tmp, "np16.json")), load(os.path.join(tmp, "np1.json"))
    res16, res1 = s16["resources"], s1["resources"]
    cpu = sum(res16["compute_cpu_s_per_rank"])
    core_s = max(res16["wall_s_per_rank"]) * cores   # the ranks' loops overlap but for their start-up skew
    eff = cpu / core_s
    report["oversubscription_cpu_efficiency"] = eff
    report["oversubscription"] = {"compute_cpu_s_total": cpu, "wall_time_s": s16["wall_time_s"], "cores": cores,
                                  "tokens_per_s_wall_np16": s16["tokens_per_s_wall"], "tokens_per_s_wall_np1": s1["tokens_per_s_wall"]}
    rows.append(("16 ranks on %d cores: kernel CPU / (wall x cores)" % cores, "%.2f" % eff, ">= 0.70", eff >= 0.70))
    rows.append(("wall tokens/s, 16 ranks vs 1 rank", "%.0f vs %.0f" % (s16["tokens_per_s_wall"], s1["tokens_per_s_wall"]),
                 "same model and batch", None))
    ep4 = load(os.path.join(tmp, "np16ep4.json"))
    report["tokens_per_s_wall_np16_ep4"] = ep4["tokens_per_s_wall"]
    rows.append(("  16 ranks with --ep 4 (experts split over TP)", "%.0f (%.2f of 1 rank)" % (ep4["tokens_per_s_wall"],
                 ep4["tokens_per_s_wall"] / s1["tokens_per_s_wall"]), ">= 0.90 of 1 rank", None))
    # Where the 16 ranks' time went: the cores' time split into compute, other CPU (MPI's
    # polling and yields, the emulator's bookkeeping) and idle; each rank's wall time inside
    # communication; and the compute CPU against one rank's for the same steps.
    total_cpu = sum(res16["cpu_s_per_rank"])
    other, idle = (total_cpu - cpu) / core_s, max(0.0, 1 - total_cpu / core_s)
    comm_share = sum(c / w for c, w in zip(res16["comm_wall_s_per_rank"], res16["wall_s_per_rank"])) / len(res16["wall_s_per_rank"])
    inflation = cpu / sum(res1["compute_cpu_s_per_rank"])
    report["np16_time"] = {"compute_fraction_of_cores": eff, "other_cpu_fraction_of_cores": other,
                           "idle_fraction_of_cores": idle, "comm_wall_fraction_per_rank": comm_share, "compute_cpu_vs_np1": inflation}
    rows.append(("16 ranks: cores' time; ranks' wall in comm",
                 "compute %.0f%%, other CPU %.0f%%, idle %.0f%%; %.0f%% of each rank's wall in communication" %
                 (100 * eff, 100 * other, 100 * idle, 100 * comm_share),
                 "where the time goes", None))
    rows.append(("16 ranks' compute CPU / 1 rank's, same steps", "%.2fx" % inflation, "1.0 if splitting cost nothing", None))
    rss = s16["resources"]["rss_bytes_per_rank"]
    predicted = {}
    for role in s16["memory_bytes"]:
        for r in role["ranks"]:
            predicted[r] = role["total"] - role["communication"]
    report["rss_total_bytes_np16"] = sum(rss)
    report["memory"] = {"rss_bytes_per_rank": rss, "model_fp32_bytes_per_rank": [predicted.get(i, 0) for i in range(len(rss))]}
    rows.append(("peak RSS, 16 ranks (sum; max rank)", "%.0f MiB; %.0f MiB" % (sum(rss) / 2**20, max(rss) / 2**20),
                 "memory model, fp32 buffers: %.0f MiB; %.0f MiB" % (sum(predicted.values()) / 2**20, max(predicted.values()) / 2**20), None))

    # 5. Emulator overhead, 7. scaling
    rows.append(("emulator bookkeeping per step", "%.1f%%" % (100 * local["emulator_overhead_fraction"]), "<= 3%",
                 local["emulator_overhead_fraction"] <= 0.03))
    cg = os.path.join(tmp, "callgrind-step.txt")
    if os.path.exists(cg):
        prof = instruction_profile(cg)
        report["instructions_tiny_step"] = prof
        total = prof["instructions_per_step"]
        parts = ", ".join("%s %.1f%%" % (k, 100.0 * v / total) for k, v in sorted(prof["groups"].items(), key=lambda kv: -kv[1]))
        rows.append(("instructions per step, tiny config (callgrind)", "%.1f M (%s)" % (total / 1e6, parts), "repeatable", None))
        bare = instruction_profile(os.path.join(tmp, "callgrind-step-noclock.txt"))["instructions_per_step"]
        emu = (total - bare) / total
        report["emulator_overhead_fraction_instructions"] = emu
        report["instructions_tiny_step_without_clock"] = bare
        rows.append(("emulator bookkeeping per step, from instructions", "%.2f%% (%.2f M of %.1f M)" % (100 * emu, (total - bare) / 1e6, total / 1e6),
                     "<= 3%", emu <= 0.03))
    sc = local["scaling"]
    widths = ", ".join("d %d: %.3f s" % (w["d_model"], w["cpu_s"]) for w in sc["d_model"])
    rows.append(("step CPU time vs FLOPs over d_model (exponent)", "%.2f (%s)" % (local["scaling_exponent_d_model"], widths),
                 "about 1", None))
    rows.append(("step CPU time over experts", ", ".join("E %d: %.3f s" % (e["experts"], e["cpu_s"]) for e in sc["experts"]),
                 "flat (top-2 FLOPs per token)", None))

    report["table"] = [{"item": a, "figure": b_, "reference": c, "met": d} for a, b_, c, d in rows]
    width = max(len(r[0]) for r in rows)
    for a, b_, c, d in rows:
        verdict = "" if d is None else ("met" if d else "NOT MET")
        print("%-*s  %-60s  %-28s %s" % (width, a, b_, c, verdict))
    with open(out, "w") as f:
        json.dump(report, f, indent=1, sort_keys=True)
    print("bench: wrote %s" % out)


if __name__ == "__main__":
    main()
