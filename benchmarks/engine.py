"""Engine benchmark: decoder-step latency of diffsolve vs transformers on the same weights, in the same run.

    python benchmarks/engine.py [--quick] [--out benchmarks/results/engine.json]

For each config and batch size it loads one random checkpoint into both engines, checks the logits agree,
and times one denoising step (decoder pass with self-conditioning, as every pass after the first), eager and
with `compile_denoiser()` (torch.compile; its one-off compilation time is reported separately).
It also times a plain fp32 matmul of the step's largest shape to report the achieved fraction of the
machine's matmul rate, and compares diffusion vs autoregressive decoding tokens/s on our engine.
Prints a markdown table, writes JSON and (when matplotlib is installed) a PNG plot next to it.
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from diffsolve.core import SamplingConfig, generate, generate_autoregressive, load_model
from diffsolve.core.config import TINY_VISION_CONFIG
from reporting import THREADS_HELP, add_out_argument, count, pyplot, save_figure, write_results

CONFIGS = {
    # what small task models look like: per-step overhead dominates
    "tiny": dict(text=dict(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, head_dim=16, global_head_dim=32,
                           num_global_key_value_heads=1, sliding_window=32,
                           layer_types=["sliding_attention", "full_attention"], num_experts=4, top_k_experts=2,
                           moe_intermediate_size=64), canvas=32, prompt=32),
    "small": dict(text=dict(vocab_size=1024, hidden_size=256, intermediate_size=1024, num_hidden_layers=6,
                            num_attention_heads=4, num_key_value_heads=2, head_dim=64, global_head_dim=128,
                            num_global_key_value_heads=1, sliding_window=128,
                            layer_types=["sliding_attention"] * 5 + ["full_attention"], num_experts=32,
                            top_k_experts=4, moe_intermediate_size=256), canvas=256, prompt=64),
}


def build(name: str, directory: Path):
    from transformers import DiffusionGemmaConfig, DiffusionGemmaForBlockDiffusion

    spec = CONFIGS[name]
    torch.manual_seed(0)
    cfg = DiffusionGemmaConfig(text_config=dict(spec["text"]), vision_config=dict(TINY_VISION_CONFIG),
                               canvas_length=spec["canvas"])
    cfg.text_config._attn_implementation = "sdpa"
    hf = DiffusionGemmaForBlockDiffusion(cfg).eval()
    hf.save_pretrained(directory)
    return hf, load_model(directory)


def median_seconds(fns: dict, repeats: int, warmup: int = 3) -> dict[str, float]:
    """Median seconds of each function, timed in interleaved rounds (one call of each per round) so that the
    drift of a shared machine (frequency, neighbours) lands on every contender alike, not on whichever ran last."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def step_flops(text: dict, batch: int, canvas: int, prompt: int) -> float:
    """Multiply-adds x2 of one decoder step with self-conditioning (active experts only)."""
    h, n_heads, inter = text["hidden_size"], text["num_attention_heads"], text["intermediate_size"]
    tokens = batch * canvas
    total = 2 * tokens * text["vocab_size"] * h * 2  # soft embeddings + tied LM head
    total += 3 * 2 * tokens * h * inter  # self-conditioning MLP
    for kind in text["layer_types"]:
        full = kind == "full_attention"
        d = text["global_head_dim"] if full else text["head_dim"]
        kv = text["num_global_key_value_heads"] if full else text["num_key_value_heads"]
        keys = (prompt if full else min(prompt, text["sliding_window"] - 1)) + canvas
        total += 2 * tokens * h * d * (2 * n_heads + kv * (1 if full else 2))  # q, o, k (+ v)
        total += 2 * 2 * batch * n_heads * canvas * keys * d  # scores and weighted values
        total += 3 * 2 * tokens * h * inter  # dense MLP
        total += 2 * tokens * h * text["num_experts"]  # router
        total += text["top_k_experts"] * 3 * 2 * tokens * h * text["moe_intermediate_size"]  # experts
    return total


def bench_step(name: str, batch: int, hf, ours, repeats: int) -> dict:
    spec = CONFIGS[name]
    vocab, canvas_len = spec["text"]["vocab_size"], spec["canvas"]
    g = torch.Generator().manual_seed(batch)
    prompt = torch.randint(0, vocab, (batch, spec["prompt"]), generator=g)
    canvas = torch.randint(0, vocab, (batch, canvas_len), generator=g)
    sc = torch.randn(batch, canvas_len, vocab, generator=g)
    with torch.inference_mode():
        pkv = hf(input_ids=prompt, decoder_input_ids=canvas).past_key_values
        cache = ours.encode(prompt)
        ref = hf(past_key_values=pkv, decoder_input_ids=canvas, self_conditioning_logits=sc).logits
        mine = ours.denoise(canvas, cache, sc)
        max_diff = (ref - mine).abs().max().item()
        torch._dynamo.reset()  # every compiled measurement starts from a clean slate (no graphs of other shapes)
        compiled = copy.deepcopy(ours)
        compiled.compile_denoiser()
        start = time.perf_counter()
        compiled_diff = (compiled.denoise(canvas, cache, sc) - ref).abs().max().item()
        compile_s = time.perf_counter() - start
        h, inter = spec["text"]["hidden_size"], spec["text"]["intermediate_size"]
        a, b = torch.randn(batch * canvas_len, h), torch.randn(h, inter)
        t = median_seconds({"hf": lambda: hf(past_key_values=pkv, decoder_input_ids=canvas,
                                            self_conditioning_logits=sc),
                            "ours": lambda: ours.denoise(canvas, cache, sc),
                            "compiled": lambda: compiled.denoise(canvas, cache, sc),
                            "matmul": lambda: a @ b}, repeats)
        t_hf, t_ours, t_compiled, t_mm = t["hf"], t["ours"], t["compiled"], t["matmul"]
    mm_rate = 2 * a.shape[0] * h * inter / t_mm
    flops = step_flops(spec["text"], batch, canvas_len, spec["prompt"])
    return {
        "config": name, "batch": batch, "max_abs_logit_diff": max_diff,
        "transformers_ms": 1e3 * t_hf, "diffsolve_ms": 1e3 * t_ours, "speedup": t_hf / t_ours,
        "diffsolve_tokens_per_s": batch * canvas_len / t_ours, "transformers_tokens_per_s": batch * canvas_len / t_hf,
        "matmul_gflops": mm_rate / 1e9,
        "diffsolve_fraction_of_matmul": flops / t_ours / mm_rate,
        "transformers_fraction_of_matmul": flops / t_hf / mm_rate,
        "compiled_ms": 1e3 * t_compiled, "compiled_speedup": t_hf / t_compiled, "compile_s": compile_s,
        "compiled_max_abs_logit_diff": compiled_diff, "compiled_fraction_of_matmul": flops / t_compiled / mm_rate,
    }


def bench_shipped(task: str, batch: int, repeats: int) -> dict:
    """Eager vs compiled decoder pass of a shipped task model (no transformers run: same engine both ways)."""
    from diffsolve.solvers.checkpoints import default_checkpoint

    eager = load_model(default_checkpoint(task))
    torch._dynamo.reset()
    compiled = copy.deepcopy(eager)
    compiled.compile_denoiser()
    cfg = eager.config
    g = torch.Generator().manual_seed(batch)
    prompt = torch.randint(0, cfg.vocab_size, (batch, 32), generator=g)
    canvas = torch.randint(0, cfg.vocab_size, (batch, cfg.canvas_length), generator=g)
    sc = torch.randn(batch, cfg.canvas_length, cfg.vocab_size, generator=g)
    with torch.inference_mode():
        cache = eager.encode(prompt)
        want = eager.denoise(canvas, cache, sc)
        start = time.perf_counter()
        diff = (compiled.denoise(canvas, cache, sc) - want).abs().max().item()
        compile_s = time.perf_counter() - start
        t = median_seconds({"eager": lambda: eager.denoise(canvas, cache, sc),
                            "compiled": lambda: compiled.denoise(canvas, cache, sc)}, repeats)
        t_eager, t_compiled = t["eager"], t["compiled"]
    return {"task": task, "batch": batch, "canvas": cfg.canvas_length, "eager_ms": 1e3 * t_eager,
            "compiled_ms": 1e3 * t_compiled, "compiled_speedup": t_eager / t_compiled, "compile_s": compile_s,
            "max_abs_logit_diff": diff}


def bench_diffusion_vs_ar(name: str, ours, steps: int) -> dict:
    """Wall-clock tokens/s of a full canvas by diffusion (fixed `steps` passes) vs token-by-token AR."""
    spec = CONFIGS[name]
    prompt = torch.randint(0, spec["text"]["vocab_size"], (1, spec["prompt"]),
                           generator=torch.Generator().manual_seed(0))
    n = spec["canvas"]
    config = SamplingConfig(max_denoising_steps=steps, stability_threshold=None, max_new_tokens=n)
    t = median_seconds({"diffusion": lambda: generate(ours, prompt, config, generator=torch.Generator().manual_seed(0)),
                        "ar": lambda: generate_autoregressive(ours, prompt, n)}, 5, 1)
    t_diff, t_ar = t["diffusion"], t["ar"]
    return {"config": name, "tokens": n, "diffusion_steps": steps, "diffusion_tokens_per_s": n / t_diff,
            "ar_tokens_per_s": n / t_ar, "diffusion_over_ar": t_ar / t_diff}


def markdown(steps: list[dict], modes: list[dict], shipped: list[dict]) -> str:
    lines = ["| config | batch | transformers ms/step | diffsolve ms/step | speedup | compiled ms/step | "
             "compiled speedup | compile s | diffsolve tok/s | % of matmul (diffsolve / compiled / transformers) | "
             "max abs logit diff (eager / compiled) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in steps:
        lines.append(f"| {r['config']} | {r['batch']} | {r['transformers_ms']:.2f} | {r['diffsolve_ms']:.2f} | "
                     f"{r['speedup']:.2f}x | {r['compiled_ms']:.2f} | {r['compiled_speedup']:.2f}x | "
                     f"{r['compile_s']:.0f} | {r['diffsolve_tokens_per_s']:.0f} | "
                     f"{100 * r['diffsolve_fraction_of_matmul']:.0f}% / "
                     f"{100 * r['compiled_fraction_of_matmul']:.0f}% / "
                     f"{100 * r['transformers_fraction_of_matmul']:.0f}% | "
                     f"{r['max_abs_logit_diff']:.1e} / {r['compiled_max_abs_logit_diff']:.1e} |")
    lines += ["", "| config | canvas tokens | diffusion passes | diffusion tok/s | AR tok/s | diffusion / AR |",
              "|---|---|---|---|---|---|"]
    for r in modes:
        lines.append(f"| {r['config']} | {r['tokens']} | {r['diffusion_steps']} | {r['diffusion_tokens_per_s']:.0f} | "
                     f"{r['ar_tokens_per_s']:.0f} | {r['diffusion_over_ar']:.2f}x |")
    lines += ["", "| shipped model | batch | canvas | eager ms/pass | compiled ms/pass | compiled speedup | "
              "compile s | max abs logit diff |", "|---|---|---|---|---|---|---|---|"]
    for r in shipped:
        lines.append(f"| {r['task']} | {r['batch']} | {r['canvas']} | {r['eager_ms']:.2f} | {r['compiled_ms']:.2f} | "
                     f"{r['compiled_speedup']:.2f}x | {r['compile_s']:.0f} | {r['max_abs_logit_diff']:.1e} |")
    return "\n".join(lines)


def plot(steps: list[dict], path: Path) -> bool:
    plt = pyplot()
    if plt is None:
        return False
    labels = [f"{r['config']}\nbatch {r['batch']}" for r in steps]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    x = range(len(steps))
    ax.bar([i - 0.27 for i in x], [r["transformers_ms"] for r in steps], 0.27, label="transformers 5.23.0")
    ax.bar(list(x), [r["diffsolve_ms"] for r in steps], 0.27, label="diffsolve")
    ax.bar([i + 0.27 for i in x], [r["compiled_ms"] for r in steps], 0.27, label="diffsolve, compiled")
    for i, r in enumerate(steps):
        ax.text(i, r["diffsolve_ms"], f"{r['speedup']:.1f}x", ha="center", va="bottom", fontsize=8)
        ax.text(i + 0.27, r["compiled_ms"], f"{r['compiled_speedup']:.1f}x", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(list(x), labels)
    ax.set_yscale("log")
    ax.set_ylabel("ms per denoising step (log)")
    ax.set_title("Decoder step latency, same weights, same machine")
    ax.legend()
    save_figure(fig, path)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (smoke run)")
    parser.add_argument("--threads", type=count(1), default=2, help=THREADS_HELP)
    add_out_argument(parser, "engine.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    repeats = 5 if args.quick else 30
    steps, modes = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name in CONFIGS:
            hf, ours = build(name, Path(tmp) / name)
            for batch in (1, 8):
                steps.append(bench_step(name, batch, hf, ours, repeats if name == "tiny" else max(3, repeats // 5)))
                print(f"{name} batch {batch}: {steps[-1]['speedup']:.2f}x", file=sys.stderr)
            modes.append(bench_diffusion_vs_ar(name, ours, steps=16))
    shipped = []
    for task in ("sudoku", "graphs", "molecules"):
        for batch in (1, 8):
            shipped.append(bench_shipped(task, batch, max(5, repeats // 3)))
            print(f"{task} batch {batch}: compiled {shipped[-1]['compiled_speedup']:.2f}x", file=sys.stderr)
    table = markdown(steps, modes, shipped)
    print(table)
    import transformers

    meta = {"torch": torch.__version__, "transformers": transformers.__version__, "threads": args.threads,
            "machine": platform.machine(),
            "processor": platform.processor()}
    write_results(args.out, {"meta": meta, "steps": steps, "modes": modes, "shipped": shipped}, table,
                  lambda path: plot(steps, path))
    print(f"\nwrote {args.out} and its .md / .png", file=sys.stderr)


if __name__ == "__main__":
    main()
