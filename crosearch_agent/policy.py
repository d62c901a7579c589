"""LLM backends behind one small interface: generate a batch of prompts with stop strings
(one `Sampling` for all prompts, or one each).

- `vllm`: the vLLM engine in-process (the default when vLLM is installed);
- `openai`: any OpenAI-compatible completions server, e.g.
  `python -m vllm.entrypoints.openai.api_server --model PATH`, for serving elsewhere;
- `transformers`: in-process `generate`, the fallback.

Every backend returns the text *without* the stop string that ended it and says which stop
string it was, so the agent loop never depends on the backend. Greedy decoding gives the
same tokens on every backend (bf16 numerics may drift after a few dozen tokens).
"""
from __future__ import annotations

import contextlib
import functools
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from crosearch_agent.policy_folders import resolve_policy
from crosearch_agent.token_scripts import allowed_token_ids

BACKENDS = ("vllm", "openai", "transformers")


class PolicyError(RuntimeError):
    """The policy backend failed (model server down, out of memory, bad model path...)."""


@dataclass(frozen=True)
class Sampling:
    max_tokens: int = 256
    temperature: float = 0.0      # 0: greedy
    stop: tuple[str, ...] = ()
    seed: int = 0
    # Write only letters of these scripts (`token_scripts`; the agent's answers), plus the
    # tokens of `closing`; None: any token.
    scripts: frozenset[str] | None = None
    closing: str = ""


@dataclass(frozen=True)
class Generation:
    text: str                     # generated text, without the stop string that ended it
    finish_reason: str            # "stop" (a stop string or end of sequence) or "length"
    stop: str | None = None       # the stop string that ended generation, if any
    tokens: int = 0               # number of generated tokens
    token_ids: list[int] = field(default_factory=list, compare=False)  # as sampled, when the backend says
    logprobs: list[float] = field(default_factory=list, compare=False)  # their sampling log-probabilities (training)


def vllm_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def default_backend() -> str:
    return "vllm" if vllm_available() else "transformers"


def cut_at_stop(text: str, stops) -> tuple[str, str | None]:
    """Text up to the earliest stop string, and which one it was."""
    hits = [(text.find(s), s) for s in stops if s and s in text]
    if not hits:
        return text, None
    pos, stop = min(hits)
    return text[:pos], stop


def per_prompt(sampling: Sampling | list[Sampling], n: int) -> list[Sampling]:
    """One `Sampling` per prompt: backends take one for all prompts or a list, one each."""
    samplings = list(sampling) if isinstance(sampling, (list, tuple)) else [sampling] * n
    if len(samplings) != n:
        raise ValueError(f"{len(samplings)} samplings for {n} prompts")
    return samplings


def by_sampling(generate, prompts: list[str], sampling: Sampling | list[Sampling]) -> list[Generation]:
    """`generate(prompts, one_sampling)` called once per distinct sampling, results in prompt order."""
    groups: dict[Sampling, list[int]] = {}
    for i, s in enumerate(per_prompt(sampling, len(prompts))):
        groups.setdefault(s, []).append(i)
    out: list[Generation | None] = [None] * len(prompts)
    for s, idx in groups.items():
        for i, gen in zip(idx, generate([prompts[i] for i in idx], s)):
            out[i] = gen
    return out


# ---------------------------------------------------------------- transformers

@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX). Without it PyTorch
    emulates bf16: on the AVX2 machines here a bf16 matmul measured ~100x slower than float32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def fast_dtype(device: str = "cpu") -> str:
    """bfloat16 where it is fast (GPUs, CPUs with native bf16), else float32."""
    return "bfloat16" if device != "cpu" or cpu_has_native_bf16() else "float32"


class TransformersPolicy:
    backend = "transformers"

    def __init__(self, model: str, dtype: str | None = None, device: str = "cpu"):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.name = model
        dtype = dtype or fast_dtype(device)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model)
            self.model = AutoModelForCausalLM.from_pretrained(model, dtype=getattr(torch, dtype)).to(device).eval()
        except (OSError, ValueError) as err:
            raise PolicyError(f"cannot load policy {model!r} with transformers: {err}") from err
        self.tokenizer.padding_side = "left"  # decoder-only: pad on the left to generate
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.device = device
        self._lock = threading.Lock()  # one generate at a time on a shared model

    def generate(self, prompts: list[str], sampling: Sampling | list[Sampling]) -> list[Generation]:
        """Continue each prompt; `sampling` is one for all or a list, one per prompt."""
        return by_sampling(self._generate, prompts, sampling)

    def _generate(self, prompts: list[str], sampling: Sampling) -> list[Generation]:
        import torch

        if not prompts:
            return []
        batch = self.tokenizer(list(prompts), return_tensors="pt", padding=True).to(self.device)
        kwargs = dict(max_new_tokens=sampling.max_tokens, pad_token_id=self.tokenizer.pad_token_id)
        if sampling.stop:
            kwargs.update(stop_strings=list(sampling.stop), tokenizer=self.tokenizer)
        if sampling.temperature > 0:
            kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=1.0, top_k=0)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if sampling.scripts is not None:
            from transformers import LogitsProcessorList

            only = _OnlyTokens(allowed_token_ids(self.tokenizer, sampling.scripts, sampling.closing))
            kwargs.update(logits_processor=LogitsProcessorList([only]))
        with self._lock, torch.inference_mode():
            if sampling.temperature > 0:
                torch.manual_seed(sampling.seed)
            out = self.model.generate(**batch, **kwargs)
        new = out[:, batch["input_ids"].shape[1]:]
        results = []
        for row in new:
            ids = [int(t) for t in row if int(t) != self.tokenizer.pad_token_id]
            ended = bool(ids) and ids[-1] == self.tokenizer.eos_token_id
            text, stop = cut_at_stop(self.tokenizer.decode(ids, skip_special_tokens=True), sampling.stop)
            finish = "stop" if stop or ended else ("length" if len(ids) >= sampling.max_tokens else "stop")
            results.append(Generation(text, finish, stop, len(ids), ids))
        return results


class _OnlyTokens:
    """A `generate` logits processor that lets only the given token ids be chosen."""

    def __init__(self, ids: list[int]):
        self.ids = ids
        self.mask = None

    def __call__(self, input_ids, scores):
        import torch

        if self.mask is None or self.mask.shape[-1] != scores.shape[-1]:
            self.mask = torch.full((scores.shape[-1],), float("-inf"), device=scores.device)
            self.mask[[i for i in self.ids if i < scores.shape[-1]]] = 0.0
        return scores + self.mask.to(scores.dtype)


# ---------------------------------------------------------------- vLLM (in-process)

# vLLM's CPU worker computes on all cores but one, which it keeps for its scheduler. On a
# machine of a few cores that is a large share left idle: on 2 cores, binding the worker to
# both measured 1.2x the tokens/s at batch 1 and 1.4x at batch 8 (benchmarks/generation.py;
# 1.5-1.8x for batches of ~600-token answer-turn prompts).
FEW_CORES = 4


def all_cores_binding() -> str | None:
    """The VLLM_CPU_OMP_THREADS_BIND the project starts vLLM's CPU engine with: every core this
    process may use, on a machine of at most FEW_CORES cores where the user set none; None
    where vLLM's own binding (or the user's) stands."""
    cores = sorted(os.sched_getaffinity(0))
    if "VLLM_CPU_OMP_THREADS_BIND" in os.environ or len(cores) > FEW_CORES:
        return None
    return ",".join(map(str, cores))


@contextlib.contextmanager
def cpu_binding(all_cores: bool):
    """The environment vLLM's CPU engine starts in: with `all_cores`, `all_cores_binding()`."""
    binding = all_cores_binding() if all_cores else None
    if binding is None:
        yield
        return
    os.environ["VLLM_CPU_OMP_THREADS_BIND"] = binding
    try:
        yield
    finally:
        os.environ.pop("VLLM_CPU_OMP_THREADS_BIND", None)


class VLLMPolicy:
    backend = "vllm"

    def __init__(self, model: str, dtype: str | None = None, max_model_len: int = 8192, seed: int = 0,
                 cpu_kv_cache_gb: float = 1.0, all_cores: bool = True, **engine_kw):
        try:
            import torch
            from vllm import LLM
        except ImportError as err:
            raise PolicyError("the vllm backend needs vLLM (make setup installs it); "
                              "use --backend transformers meanwhile") from err
        gpu = torch.cuda.is_available()
        # vLLM's CPU build on AVX2 measured float32 2.5-4x faster than bf16 (batch 1 and 8).
        dtype = dtype or fast_dtype("cuda" if gpu else "cpu")
        if not gpu:
            # On CPU vLLM otherwise reserves a fraction (0.92) of the node's memory and refuses to
            # start when other processes hold some; a fixed KV cache is enough for small policies.
            engine_kw.setdefault("kv_cache_memory_bytes", int(cpu_kv_cache_gb * 2**30))
        self.name = model
        try:
            with cpu_binding(all_cores and not gpu):
                self.llm = LLM(model=model, dtype=dtype, max_model_len=max_model_len, seed=seed, enforce_eager=True,
                               **engine_kw)
        except Exception as err:  # engine start-up fails in many ways; say which model and why
            raise PolicyError(f"cannot start vLLM on {model!r}: {type(err).__name__}: {err}") from err
        self._lock = threading.Lock()

    def _params(self, sampling: Sampling):
        from vllm import SamplingParams

        allowed = None
        if sampling.scripts is not None:
            allowed = allowed_token_ids(self.llm.get_tokenizer(), sampling.scripts, sampling.closing)
        return SamplingParams(max_tokens=sampling.max_tokens, temperature=sampling.temperature,
                              stop=list(sampling.stop) or None, seed=sampling.seed, allowed_token_ids=allowed)

    def generate(self, prompts: list[str], sampling: Sampling | list[Sampling]) -> list[Generation]:
        """Continue each prompt; `sampling` is one for all or a list, one per prompt."""
        if not prompts:
            return []
        samplings = per_prompt(sampling, len(prompts))
        made = {s: self._params(s) for s in set(samplings)}
        params = [made[s] for s in samplings]
        try:
            with self._lock:
                outputs = self.llm.generate(list(prompts), params, use_tqdm=False)
        except Exception as err:
            raise PolicyError(f"vLLM generation failed: {type(err).__name__}: {err}") from err
        results = []
        for out in outputs:
            o = out.outputs[0]
            stop = o.stop_reason if isinstance(o.stop_reason, str) else None
            results.append(Generation(o.text, o.finish_reason or "stop", stop, len(o.token_ids), list(o.token_ids)))
        return results

    def close(self) -> None:
        """Stop the engine's worker processes now rather than at interpreter exit."""
        engine = getattr(getattr(self, "llm", None), "llm_engine", None)
        client = getattr(engine, "engine_core", None)
        if client is not None:
            client.shutdown()
        self.llm = None


# ---------------------------------------------------------------- OpenAI-compatible server

class OpenAIPolicy:
    backend = "openai"

    def __init__(self, base_url: str, model: str | None = None, timeout: float = 300.0, api_key: str = "EMPTY"):
        self.base_url = base_url.rstrip("/")
        self.timeout, self.api_key = timeout, api_key
        self.name = model or self._served_model()

    def _request(self, path: str, payload: dict | None = None) -> dict:
        import httpx  # the one HTTP client of the project (the retrieval service's client too)

        headers = {"Authorization": f"Bearer {self.api_key}"}
        try:
            if payload is None:
                response = httpx.get(self.base_url + path, headers=headers, timeout=self.timeout)
            else:
                response = httpx.post(self.base_url + path, json=payload, headers=headers, timeout=self.timeout)
        except (httpx.RemoteProtocolError, httpx.ReadError) as err:  # it went away while answering
            raise PolicyError(f"model server {self.base_url} broke off its answer ({type(err).__name__}: {err}); "
                              "has it stopped?") from err
        except httpx.HTTPError as err:
            raise PolicyError(f"model server {self.base_url} is not reachable ({type(err).__name__}: {err}); "
                              "is it running?") from err
        if response.status_code >= 400:
            raise PolicyError(f"model server {self.base_url} answered {response.status_code}: {response.text[:300]!r}")
        try:
            return response.json()
        except ValueError as err:
            raise PolicyError(f"model server {self.base_url} answered something that is not JSON: "
                              f"{response.text[:200]!r}") from err

    @functools.cached_property
    def _tokenizer(self):
        """The served model's tokenizer where its folder is readable here (vLLM's server names
        it as the model's `root`), for the answer-script constraint, which vLLM's server takes
        as `allowed_token_ids`; None elsewhere: answers go unconstrained."""
        try:
            models = self._request("/models").get("data") or []
        except PolicyError:
            return None
        root = next((m.get("root") for m in models if m.get("id") == self.name and m.get("root")), self.name)
        if not Path(root).is_dir():
            return None
        try:
            from transformers import AutoTokenizer

            return AutoTokenizer.from_pretrained(root)
        except (OSError, ValueError):
            return None

    def _served_model(self) -> str:
        models = self._request("/models").get("data") or []
        if not models:
            raise PolicyError(f"model server {self.base_url} serves no model")
        return models[0]["id"]

    def generate(self, prompts: list[str], sampling: Sampling | list[Sampling]) -> list[Generation]:
        """Continue each prompt; `sampling` is one for all or a list, one per prompt (one
        request per distinct one)."""
        return by_sampling(self._generate, prompts, sampling)

    def _generate(self, prompts: list[str], sampling: Sampling) -> list[Generation]:
        if not prompts:
            return []
        payload = {"model": self.name, "prompt": list(prompts), "max_tokens": sampling.max_tokens,
                   "temperature": sampling.temperature, "stop": list(sampling.stop) or None, "seed": sampling.seed}
        if sampling.scripts is not None and self._tokenizer is not None:
            payload["allowed_token_ids"] = allowed_token_ids(self._tokenizer, sampling.scripts, sampling.closing)
        body = self._request("/completions", payload)
        choices = sorted(body.get("choices", []), key=lambda c: c["index"])
        if len(choices) != len(prompts):
            raise PolicyError(f"model server returned {len(choices)} completions for {len(prompts)} prompts")
        results = []
        for c in choices:
            # vLLM reports the matched stop string as `stop_reason`; other servers may not.
            stop = c.get("stop_reason") if isinstance(c.get("stop_reason"), str) else None
            tokens = (body.get("usage") or {}).get("completion_tokens", 0) // max(len(prompts), 1)
            results.append(Generation(c.get("text", ""), c.get("finish_reason") or "stop", stop, tokens))
        return results


def load_policy(backend: str | None = None, policy: str | None = None, base_url: str | None = None, **kw):
    """The policy for a backend name; `policy` is a folder, hub id, or None for the default."""
    backend = backend or default_backend()
    if backend == "openai":
        if not base_url:
            raise PolicyError("the openai backend needs --base-url (e.g. http://127.0.0.1:8000/v1)")
        return OpenAIPolicy(base_url, policy)
    try:
        model = resolve_policy(policy)
    except (LookupError, RuntimeError) as err:  # no such shipped policy, a damaged artifact
        raise PolicyError(str(err)) from err
    if backend == "vllm":
        return VLLMPolicy(model, **kw)
    if backend == "transformers":
        return TransformersPolicy(model)
    raise PolicyError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
