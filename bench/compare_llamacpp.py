#!/usr/bin/python3
"""qforge against llama.cpp, side by side in one run (results go to bench/RESULTS.md).

  quality  MODEL_DIR   GGUF interoperability and quantization quality on a small real model:
           qforge writes f32 GGUF as the base; for each type both qforge and llama-quantize quantize
           it; llama-perplexity and `qforge perplexity` score every file, and llama-perplexity's
           KL divergence against the base judges both quantizations.
  speed    HF_DIR      generation / prompt speed of qforge and llama-bench on the same GGUF files
           (written once by qforge from HF_DIR), and quantization time of both tools.

Needs a built llama.cpp (--llama-bin DIR with llama-quantize, llama-perplexity, llama-bench); it
never downloads anything. Run on a quiet machine: `uptime` load well under the core count.
"""
import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def run(cmd, stdout_only=False):
    """Runs cmd; returns (its output, seconds). Exits with its stderr if it fails."""
    t0 = time.monotonic()
    p = subprocess.run(cmd, capture_output=True, text=True)
    dt = time.monotonic() - t0
    if p.returncode != 0:
        sys.exit(f"compare: command failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr[-3000:]}")
    return (p.stdout if stdout_only else p.stdout + p.stderr), dt


def last_json(out):
    return json.loads(out.strip().splitlines()[-1])


def cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def llama_ppl(args, model, ctx, chunks, extra=()):
    out, _ = run([f"{args.llama_bin}/llama-perplexity", "-m", model, "-f", args.text, "-c", str(ctx), "--chunks",
                  str(chunks), "-t", str(args.threads), *extra])
    return out


def parse_final_ppl(out):
    m = re.search(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)", out)
    return float(m.group(1)) if m else float("nan")


def llama_final_ppl(args, model, ctx, chunks):
    # llama-perplexity's log sometimes ends before its summary line; a rerun prints it.
    for _ in range(3):
        v = parse_final_ppl(llama_ppl(args, model, ctx, chunks))
        if v == v:
            return v
    return float("nan")


def parse_kld(out):
    def grab(pat):
        m = re.search(pat, out)
        return float(m.group(1)) if m else float("nan")
    return {"ppl_q": grab(r"Mean PPL\(Q\)\s*:\s*([0-9.]+)"), "ppl_base": grab(r"Mean PPL\(base\)\s*:\s*([0-9.]+)"),
            "kld_mean": grab(r"Mean\s+KLD:\s*([0-9.]+)"), "kld_p99": grab(r"99\.0%\s+KLD:\s*([0-9.]+)"),
            "same_top": grab(r"Same top p:\s*([0-9.]+)")}


def qforge_ppl(args, model, ctx, chunks):
    out, _ = run([args.qforge, "perplexity", model, "--text", args.text, "-c", str(ctx), "--chunks", str(chunks),
                  "-t", str(args.threads), "--json"], stdout_only=True)
    return last_json(out)["ppl"]


LLAMA_NAMES = {"f16": "F16", "bf16": "BF16", "q8_0": "Q8_0", "q4_0": "Q4_0", "q4_1": "Q4_1", "q5_0": "Q5_0",
               "q5_1": "Q5_1", "q2_k": "Q2_K", "q3_k_s": "Q3_K_S", "q3_k_m": "Q3_K_M", "q3_k_l": "Q3_K_L",
               "q4_k_s": "Q4_K_S", "q4_k_m": "Q4_K_M", "q5_k_s": "Q5_K_S", "q5_k_m": "Q5_K_M", "q6_k": "Q6_K",
               "iq4_nl": "IQ4_NL"}


def quality(args):
    w = args.work
    os.makedirs(w, exist_ok=True)
    base = f"{w}/base-f32.gguf"
    run([args.qforge, "quantize", args.model, "--type", "f32", "-o", base, "--no-eval", "--force"])
    kld = f"{w}/base.kld"
    base_out = llama_ppl(args, base, args.ctx, args.chunks, ["--kl-divergence-base", kld])
    print(f"base (f32, written by qforge): llama-perplexity PPL {parse_final_ppl(base_out):.4f}, "
          f"qforge {qforge_ppl(args, base, args.ctx, args.chunks):.4f}\n")
    print("| type | writer | size | PPL llama.cpp | PPL qforge | interop diff | KLD mean (llama.cpp) | KLD p99 | same top % |")
    print("|---|---|---|---|---|---|---|---|---|")
    rows = []
    for t in args.types:
        files = {"qforge": f"{w}/{t}-qforge.gguf", "llama.cpp": f"{w}/{t}-llama.gguf"}
        run([args.qforge, "quantize", base, "--type", t, "-o", files["qforge"], "--no-eval", "--force", "-t",
             str(args.threads)])
        run([f"{args.llama_bin}/llama-quantize", base, files["llama.cpp"], LLAMA_NAMES[t], str(args.threads)])
        for writer, f in files.items():
            pl = llama_final_ppl(args, f, args.ctx, args.chunks)
            pq = qforge_ppl(args, f, args.ctx, args.chunks)
            k = parse_kld(llama_ppl(args, f, args.ctx, args.chunks, ["--kl-divergence-base", kld, "--kl-divergence"]))
            diff = 100 * (pq / pl - 1)
            rows.append({"type": t, "writer": writer, "bytes": os.path.getsize(f), "ppl_llama": pl, "ppl_qforge": pq,
                         "interop_diff_percent": diff, **k})
            print(f"| {t} | {writer} | {os.path.getsize(f) / 2**20:.2f} MiB | {pl:.4f} | {pq:.4f} | {diff:+.3f}% | "
                  f"{k['kld_mean']:.6f} | {k['kld_p99']:.6f} | {k['same_top']:.3f} |", flush=True)
    json.dump(rows, open(f"{w}/quality.json", "w"), indent=1)


def bench_llama(args, f):
    """One llama-bench round (pp512 and tg128, one repetition each): (pp tok/s, gen tok/s)."""
    out, _ = run([f"{args.llama_bin}/llama-bench", "-m", f, "-t", str(args.threads), "-p", "512", "-n", "128",
                  "-r", "1", "-o", "json"], stdout_only=True)
    res = json.loads(out[out.index("["):out.rindex("]") + 1])
    pp = next(r for r in res if r["n_prompt"] > 0)["avg_ts"]
    tg = next(r for r in res if r["n_gen"] > 0)["avg_ts"]
    return pp, tg


def bench_qforge(args, f):
    """One qforge-bench round (512-token prompt and 128 generated tokens, once each), with the
    machine's read bandwidth and the in-place read of one token's weights measured around it."""
    out, _ = run([args.qforge_bench, f, "-t", str(args.threads), "--gen-tokens", "128", "--gen-runs", "1",
                  "--pp-tokens", "512", "--pp-runs", "1", "--bw-reps", "3", "--gemm-reps", "1", "--no-cli", "--json"],
                 stdout_only=True)
    return last_json(out)["runs"][0]


def spread(values):
    return f"{min(values):.2f}-{max(values):.2f}"


def speed(args):
    """Memory bandwidth on a shared VM drifts by tens of percent within minutes, so the two engines
    are never measured minutes apart: each round runs llama-bench and qforge-bench back to back
    (alternating which goes first), every ratio is taken within a round, and the table gives the
    median over rounds with the range of the per-round ratios. The bandwidth bound of a round is
    one token's weight bytes over the time qforge-bench took to stream-read them in place."""
    w = args.work
    os.makedirs(w, exist_ok=True)
    f16 = f"{w}/f16.gguf"
    if not os.path.exists(f16):
        run([args.qforge, "quantize", args.model, "--type", "f16", "-o", f16, "--no-eval", "-t", str(args.threads)])
    print(f"CPU: {cpu_name()}; threads {args.threads}; {args.reps} interleaved rounds per type; "
          f"llama.cpp at {args.llama_bin}\n")
    print("| type | quantize qforge s | quantize llama.cpp s | file MiB | gen qforge tok/s | gen llama.cpp tok/s | "
          "gen ratio (range) | gen / bandwidth bound: qforge, llama.cpp | pp512 qforge tok/s | pp512 llama.cpp tok/s | "
          "pp ratio (range) | qforge pp matmuls / SGEMM |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    med = statistics.median
    for t in args.types:
        f = f16 if t == "f16" else f"{w}/{t}.gguf"
        tq = tl = float("nan")
        if t != "f16":
            _, tq = run([args.qforge, "quantize", f16, "--type", t, "-o", f, "--no-eval", "--force", "-t",
                         str(args.threads)])
            _, tl = run([f"{args.llama_bin}/llama-quantize", f16, f"{w}/{t}-llama.gguf", LLAMA_NAMES[t],
                         str(args.threads)])
        rounds = []
        for i in range(args.reps):
            if i % 2 == 0:
                lpp, ltg = bench_llama(args, f)
                q = bench_qforge(args, f)
            else:
                q = bench_qforge(args, f)
                lpp, ltg = bench_llama(args, f)
            bound = 1.0 / q["weights_read_seconds"]
            rounds.append({"gen_qforge": q["generation_tokens_per_second"], "gen_llama": ltg,
                           "pp_qforge": q["prompt_tokens_per_second"], "pp_llama": lpp, "bound_tps": bound,
                           "read_bandwidth": q["read_bandwidth_best"], "pp_vs_sgemm": q["prompt_vs_sgemm"],
                           "other_cores": q.get("other_processes_cores_engine")})
        col = lambda k: [r[k] for r in rounds]
        gen_ratios = [r["gen_qforge"] / r["gen_llama"] for r in rounds]
        pp_ratios = [r["pp_qforge"] / r["pp_llama"] for r in rounds]
        q_bound = [r["gen_qforge"] / r["bound_tps"] for r in rounds]
        l_bound = [r["gen_llama"] / r["bound_tps"] for r in rounds]
        row = {"type": t, "quantize_qforge_s": tq, "quantize_llama_s": tl, "bytes": os.path.getsize(f),
               "gen_qforge": med(col("gen_qforge")), "gen_llama": med(col("gen_llama")),
               "gen_ratio": med(gen_ratios), "pp_qforge": med(col("pp_qforge")), "pp_llama": med(col("pp_llama")),
               "pp_ratio": med(pp_ratios), "gen_qforge_vs_bound": med(q_bound), "gen_llama_vs_bound": med(l_bound),
               "pp_vs_sgemm": med(col("pp_vs_sgemm")), "rounds": rounds}
        rows.append(row)
        print(f"| {t} | {tq:.1f} | {tl:.1f} | {row['bytes'] / 2**20:.0f} | {row['gen_qforge']:.2f} | "
              f"{row['gen_llama']:.2f} | {row['gen_ratio']:.2f}x ({spread(gen_ratios)}) | "
              f"{100 * row['gen_qforge_vs_bound']:.0f}%, {100 * row['gen_llama_vs_bound']:.0f}% | "
              f"{row['pp_qforge']:.1f} | {row['pp_llama']:.1f} | {row['pp_ratio']:.2f}x ({spread(pp_ratios)}) | "
              f"{100 * row['pp_vs_sgemm']:.0f}% |", flush=True)
    bws = [r["read_bandwidth"] / 1e9 for row in rows for r in row["rounds"]]
    print(f"\nread bandwidth (1 GiB buffer) during the rounds: {min(bws):.1f}-{max(bws):.1f} GB/s")
    json.dump(rows, open(f"{w}/speed.json", "w"), indent=1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["quality", "speed"])
    ap.add_argument("model", help="HF directory (quality: a small real model; speed: e.g. a qforge synth checkpoint)")
    ap.add_argument("--llama-bin", required=True, help="directory with llama-quantize, llama-perplexity, llama-bench")
    ap.add_argument("--qforge", default=f"{ROOT}/build/qforge")
    ap.add_argument("--qforge-bench", default=f"{ROOT}/build/bench/qforge-bench")
    ap.add_argument("--work", default="/tmp/qforge-vs-llamacpp", help="where the GGUF files go")
    ap.add_argument("--text", default=f"{ROOT}/../shared/text/tinystories/TinyStories-valid-1M.txt")
    ap.add_argument("--types", nargs="+", default=None)
    ap.add_argument("--ctx", type=int, default=256)
    ap.add_argument("--chunks", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5, help="speed: interleaved rounds per type")
    args = ap.parse_args()
    if args.types is None:
        args.types = (["f16", "q8_0", "q4_0", "q4_k_m", "q6_k"] if args.mode == "speed" else
                      ["f16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q2_k", "q3_k_s", "q3_k_m", "q3_k_l",
                       "q4_k_s", "q4_k_m", "q5_k_s", "q5_k_m", "q6_k", "iq4_nl"])
    print(f"# qforge vs llama.cpp, {args.mode}: {args.model} ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})")
    print(f"command: {' '.join(sys.argv)}\n")
    quality(args) if args.mode == "quality" else speed(args)


if __name__ == "__main__":
    main()
