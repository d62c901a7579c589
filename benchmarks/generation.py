"""Policy generation speed: the vLLM engine vs transformers `generate`, and bf16 vs float32.

Both backends run the bundled policy (Gemma 3 270M) through the project's own interface
(`crosearch_agent.policy.VLLMPolicy` / `TransformersPolicy`, greedy, no stop strings) on the
agent's first-turn prompts, at batch 1, 8 and 32; calls alternate between backends so that
load on the machine hits both alike. Tokens/s counts the tokens each backend really
returned (a base model may end a sequence early). The vLLM engine is started once and left
in `ctx["vllm"]` for the agent benchmark; the runner closes it. No GPU on these machines:
the GPU figures are not measured.
"""
from __future__ import annotations

from benchmarks.common import BenchResult, Table, fmt_ratio, ratio, stats, timed


def agent_prompts(n: int) -> list[str]:
    """`n` distinct first-turn agent prompts (XQuAD test questions in several languages)."""
    from crosearch_agent import prompts
    from crosearch_agent.qa_data import xquad_questions

    try:
        qs = xquad_questions(split="test")
        picks = [qs[(i * 97) % len(qs)] for i in range(n)]
        return [prompts.build_prompt(q.question, q.lang, "", few_shot=0) for q in picks]
    except Exception:  # no local data: a plain prompt measures the engines as well
        return [prompts.build_prompt(f"What happened in the year {1900 + i}?", "en", "", few_shot=0) for i in range(n)]


def tokens_per_s(policy, batch: list[str], max_tokens: int) -> dict:
    from crosearch_agent.policy import Sampling

    dt, gens = timed(policy.generate, batch, Sampling(max_tokens=max_tokens, temperature=0.0))
    tokens = sum(g.tokens for g in gens)
    return {"seconds": dt, "tokens": tokens, "tokens_per_s": tokens / dt if dt else None}


def compare(variants: dict, prompts_: list[str], plan: dict, max_tokens: int, repeats: int) -> dict:
    """{batch: {variant: median tokens/s and details}} for the variants `plan[batch]` names;
    within a batch the variants alternate call by call. A variant is (policy, torch threads)."""
    import torch

    out = {}
    for b, names in plan.items():
        runs = {name: [] for name in names}
        for _ in range(repeats):
            for name in names:
                policy, threads = variants[name]
                torch.set_num_threads(threads)
                runs[name].append(tokens_per_s(policy, prompts_[:b], max_tokens))
        out[b] = {}
        for name, rs in runs.items():
            out[b][name] = {"tokens_per_s": stats([r["tokens_per_s"] for r in rs])["median"],
                            "seconds": stats([r["seconds"] for r in rs])["median"],
                            "tokens_per_sequence": sum(r["tokens"] for r in rs) / (len(rs) * b)}
    return out


def start_vllm(model: str, ctx: dict):
    """The vLLM engine (started once per benchmark process and shared through `ctx`)."""
    from crosearch_agent.policy import VLLMPolicy

    if ctx.get("vllm") is None:
        ctx["vllm_start_s"], ctx["vllm"] = timed(VLLMPolicy, model)
    return ctx["vllm"]


OWN = "vLLM, its own CPU binding"
BINDING_BATCHES = (1, 8)


def start_own_binding(model: str):
    """A second engine as vLLM binds it by itself, on machines where the project binds the
    worker to every core instead (crosearch_agent.policy.cpu_binding); None elsewhere."""
    import torch

    from crosearch_agent.policy import VLLMPolicy, all_cores_binding

    if torch.cuda.is_available() or all_cores_binding() is None:
        return None
    return VLLMPolicy(model, all_cores=False)


def run(quick: bool = False, ctx: dict | None = None) -> BenchResult:
    import torch

    from crosearch_agent.policy_folders import BUNDLED_POLICY, resolve_policy
    from crosearch_agent.policy import TransformersPolicy, fast_dtype, vllm_available

    ctx = ctx if ctx is not None else {}
    threads = ctx.get("threads", 1)
    torch.set_num_threads(threads)
    model = resolve_policy(BUNDLED_POLICY)
    max_tokens = 12 if quick else 64
    batches = (1, 8, 32)
    # Emulated bf16 (CPUs without native bf16) runs ~100x slower: quick runs compare it at batch 1 only.
    dtype_batches = (1,) if quick else (1, 8)
    repeats = 1 if quick else 2
    # Both backends run at the project's default dtype (float32 on CPUs without native bf16);
    # transformers also runs in the other dtype, to show why that default.
    dtype = fast_dtype("cpu")
    other_dtype = "float32" if dtype == "bfloat16" else "bfloat16"
    label = {"bfloat16": "transformers bf16", "float32": "transformers float32"}
    tf, tf_other = label[dtype], label[other_dtype]
    result = BenchResult("generation", config={"policy": BUNDLED_POLICY, "max_new_tokens": max_tokens,
                                               "batch_sizes": list(batches), "repeats": repeats, "greedy": True,
                                               "torch_threads": threads, "prompt": "agent first turn, few_shot=0",
                                               "dtype": dtype,
                                               "vllm": f"in-process engine, eager, {dtype}, 1 GiB KV cache (CPU build)"})
    prompts_ = agent_prompts(max(batches))
    load_s, main = timed(TransformersPolicy, model, dtype)
    load_other, other_p = timed(TransformersPolicy, model, other_dtype)
    warm = prompts_[:1]
    for p in (main, other_p):
        tokens_per_s(p, warm, 4)
    vllm, vllm_error = None, None
    if not vllm_available():
        vllm_error = "vLLM is not installed"
    else:
        try:
            vllm = start_vllm(model, ctx)
            tokens_per_s(vllm, warm, 4)
        except Exception as err:  # the transformers comparisons still stand on their own
            vllm_error = f"{type(err).__name__}: {err}"
    metrics = {"dtype": dtype, "load_s": {tf: load_s, tf_other: load_other, "vllm_start": ctx.get("vllm_start_s")},
               "vllm_error": vllm_error, "gpu": "not measured (no GPU on this machine)"}

    variants = {tf: (main, threads), tf_other: (other_p, threads)}
    if vllm:
        variants["vLLM"] = (vllm, threads)
    own_binding = start_own_binding(model) if vllm else None
    if own_binding:
        variants[OWN] = (own_binding, threads)
    other = 1 if threads != 1 else 2
    variants[f"{tf}, {other} threads"] = (main, other)
    plan = {b: [tf] + ([tf_other] if b in dtype_batches else [])
            + (["vLLM"] if vllm else []) + ([f"{tf}, {other} threads"] if b == 1 else [])
            + ([OWN] if own_binding and b in BINDING_BATCHES else [])
            for b in batches}
    by_batch = compare(variants, prompts_, plan, max_tokens, repeats)
    if own_binding:
        own_binding.close()
        metrics["binding"] = binding = {b: ratio(r["vLLM"]["tokens_per_s"], r[OWN]["tokens_per_s"])
                                        for b, r in by_batch.items() if OWN in r}
        result.tables.append(Table("vLLM on CPU: worker bound to every core (the project's choice on few cores) vs "
                                   "vLLM's own binding (one core kept for its scheduler), tokens/s",
                                   ["batch", "every core", "vLLM's own", "ratio"],
                                   [[b, by_batch[b]["vLLM"]["tokens_per_s"], by_batch[b][OWN]["tokens_per_s"],
                                     fmt_ratio(x)] for b, x in binding.items()]))
    torch.set_num_threads(threads)
    metrics["runs"] = by_batch
    table = Table(f"Tokens/s, bundled Gemma 3 270M in {dtype}, {max_tokens} new tokens, CPU ({threads} torch thread(s))",
                  ["batch", "transformers", "vLLM", "vLLM / transformers", "tokens/seq (tf, vLLM)"])
    dtable = Table("transformers on CPU: bfloat16 vs float32 (tokens/s)", ["batch", "bf16", "float32", "bf16 / float32"])
    for b, r in by_batch.items():
        t, v = r[tf], r.get("vLLM", {})
        r["vllm_speedup"] = ratio(v.get("tokens_per_s"), t["tokens_per_s"])
        table.rows.append([b, t["tokens_per_s"], v.get("tokens_per_s"), fmt_ratio(r["vllm_speedup"]),
                           f"{t['tokens_per_sequence']:.0f}, {v['tokens_per_sequence']:.0f}" if v else "-"])
        if tf_other in r:
            b16, f32 = r[label["bfloat16"]]["tokens_per_s"], r[label["float32"]]["tokens_per_s"]
            r["bf16_vs_fp32"] = ratio(b16, f32)
            dtable.rows.append([b, b16, f32, fmt_ratio(r["bf16_vs_fp32"])])
    table.rows.append(["GPU", "not measured", "not measured", "-", "-"])
    result.tables += [table, dtable]
    t_other = by_batch[1][f"{tf}, {other} threads"]["tokens_per_s"]
    threads_ratio = ratio(t_other, by_batch[1][tf]["tokens_per_s"])
    metrics["threads_ratio"] = {"other_threads": other, "ratio": threads_ratio}
    result.tables.append(Table(f"{tf}, batch 1: torch threads", [f"{threads} thread(s)", f"{other} thread(s)", "ratio"],
                               [[by_batch[1][tf]["tokens_per_s"], t_other, fmt_ratio(threads_ratio)]]))
    del other_p
    result.metrics = metrics

    speedups = ", ".join(f"{fmt_ratio(r['vllm_speedup'])} at batch {b}" for b, r in by_batch.items())
    dtypes = {b: r for b, r in by_batch.items() if "bf16_vs_fp32" in r}
    dt = ", ".join(f"{fmt_ratio(r['bf16_vs_fp32'])} at batch {b}" for b, r in dtypes.items())
    result.summary = ((f"vLLM vs transformers tokens/s ({dtype}): {speedups}" if vllm else f"vLLM not measured ({vllm_error})")
                      + f"; transformers bf16 vs float32 on CPU: {dt}; {other} vs {threads} torch threads: "
                      f"{fmt_ratio(threads_ratio)}; GPU not measured")
    if metrics.get("binding"):
        result.summary += "; vLLM worker on every core vs vLLM's own binding: " + ", ".join(
            f"{fmt_ratio(x)} at batch {b}" for b, x in metrics["binding"].items())
    if vllm_error:
        result.notes.append(f"vLLM engine not available: {vllm_error}")
    else:
        result.notes.append(f"vLLM engine start: {ctx['vllm_start_s']:.0f} s (once per process); transformers loads in "
                            f"{load_s:.1f} s.")
        slower = [b for b, r in by_batch.items() if r["vllm_speedup"] and r["vllm_speedup"] < 1]
        if slower:
            result.notes.append(f"vLLM was slower than transformers at batch {', '.join(map(str, slower))} here.")
    if threads_ratio and threads_ratio < 0.9:
        result.notes.append(f"{other} torch threads ran at {fmt_ratio(threads_ratio)} the speed of {threads} on this shared "
                            "2-core machine (threads wait on each other under load).")
    slow_bf16 = [b for b, r in dtypes.items() if r["bf16_vs_fp32"] and r["bf16_vs_fp32"] < 1]
    if slow_bf16 and dtype == "bfloat16":
        result.notes.append(f"bf16 is slower than float32 for transformers on this CPU (batch "
                            f"{', '.join(map(str, slow_bf16))}) although the CPU reports native bf16.")
    return result
