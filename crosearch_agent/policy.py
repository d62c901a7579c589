"""LLM backends behind one small interface: generate a batch of prompts with stop strings.

- `vllm`: the vLLM engine in-process (the default when vLLM is installed);
- `openai`: any OpenAI-compatible completions server, e.g.
  `python -m vllm.entrypoints.openai.api_server --model PATH`, for serving elsewhere;
- `transformers`: in-process `generate`, the fallback.

Every backend returns the text *without* the stop string that ended it and says which stop
string it was, so the agent loop never depends on the backend. Greedy decoding gives the
same tokens on every backend (bf16 numerics may drift after a few dozen tokens).
"""
from __future__ import annotations

import functools
import http.client
import json
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from crosearch_agent.config import data_home, models_home

BACKENDS = ("vllm", "openai", "transformers")
BUNDLED_POLICY = "bundled:gemma-3-270m"          # the raw base model, always
QWEN_POLICY = "bundled:qwen2.5-coder-1.5b"         # the optional second bundled policy (untrained)
SHIPPED_PREFIX = "shipped:"                        # e.g. shipped:crosearch-reader-270m (policies/<name>)


class PolicyError(RuntimeError):
    """The policy backend failed (model server down, out of memory, bad model path...)."""


@dataclass(frozen=True)
class Sampling:
    max_tokens: int = 256
    temperature: float = 0.0      # 0: greedy
    stop: tuple[str, ...] = ()
    seed: int = 0


@dataclass(frozen=True)
class Generation:
    text: str                     # generated text, without the stop string that ended it
    finish_reason: str            # "stop" (a stop string or end of sequence) or "length"
    stop: str | None = None       # the stop string that ended generation, if any
    tokens: int = 0               # number of generated tokens
    token_ids: list[int] = field(default_factory=list, compare=False)


def vllm_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def default_backend() -> str:
    return "vllm" if vllm_available() else "transformers"


def latest_checkpoint(home: Path | None = None) -> Path | None:
    """The newest policy published by `python -m training.grpo`, if any."""
    pointer = (home or data_home()) / "checkpoints" / "latest"
    return pointer.resolve() if pointer.exists() and (pointer / "config.json").exists() else None


def resolve_policy(name: str | None = None) -> str:
    """A model folder or hub id for `name`; None is the default policy: the user's own newest
    checkpoint (`checkpoints/latest`), else the trained policy this repository ships
    (`policies/`), else the raw bundled base. `bundled:gemma-3-270m` is always the raw base;
    `bundled:qwen2.5-coder-1.5b` the larger untrained reader (fetched on first use)."""
    if name == BUNDLED_POLICY:
        from crosearch_agent.bundled import materialise_policy

        return str(materialise_policy())
    if name == QWEN_POLICY:
        from crosearch_agent.bundled_qwen import materialise_qwen

        return str(materialise_qwen())
    if name and name.startswith(SHIPPED_PREFIX):
        from crosearch_agent.bundled import materialise_shipped_policy

        folder = materialise_shipped_policy(name=name[len(SHIPPED_PREFIX):])
        if folder is None:
            raise PolicyError(f"this repository ships no policy {name!r} (policies/ has no such folder)")
        return str(folder)
    if name:
        path = Path(name).expanduser()
        return str(path.resolve()) if path.exists() else name
    return str(default_policy())


def default_policy() -> Path:
    """The folder served when no policy is named (see `resolve_policy`)."""
    from crosearch_agent.bundled import materialise_policy, materialise_shipped_policy

    return latest_checkpoint() or materialise_shipped_policy() or materialise_policy()


def describe_policy(folder: str | Path) -> str:
    """Which policy a folder is, in words, for status lines: the user's newest checkpoint, the
    shipped trained policy, the raw base, or another folder / hub id."""
    from crosearch_agent.bundled import POLICY_DIR, SHIPPED_POLICY
    from crosearch_agent.bundled_qwen import QWEN_DIR

    path = Path(str(folder))
    if (ckpt := latest_checkpoint()) is not None and path.resolve() == ckpt:
        return f"your newest checkpoint ({path.name})"
    if path.name == SHIPPED_POLICY and path.parent.resolve() == models_home():
        return f"the shipped trained policy {SHIPPED_POLICY}"
    if path.name == POLICY_DIR and path.parent.resolve() == models_home():
        return "the raw bundled base Gemma 3 270M (untrained)"
    if path.name == QWEN_DIR and path.parent.resolve() == models_home():
        return "the bundled Qwen2.5-Coder-1.5B-Instruct (untrained)"
    return str(folder)


# What a trained policy's prompts looked like (training.json "agent"); other options (the
# collection, temperature, backend) stay the caller's.
TRAINED_OPTIONS = ("k", "max_turns", "max_new_tokens", "few_shot", "force_first_search", "force_global_search")


def adopt_trained_options(settings, exclude=()) -> dict:
    """Give `settings` the prompt-shaping options (`TRAINED_OPTIONS`) its policy was trained
    with (its `training.json`), except those in `exclude` (set by the user); returns what
    changed. A policy trained without worked examples or with shorter turns sees at serving
    time what it saw in training."""
    applied = {}
    for name, value in trained_agent_options(settings.policy).items():
        if name in TRAINED_OPTIONS and name not in exclude and getattr(settings, name) != value:
            setattr(settings, name, value)
            applied[name] = value
    return applied


def adopted_note(applied: dict) -> str:
    """What `adopt_trained_options` changed, as the command-line flags it amounts to."""
    return ("serving the policy with the agent options it was trained with: "
            + ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in applied.items()))


def trained_agent_options(policy: str | None = None) -> dict:
    """The agent options a policy folder was trained with (its `training.json`, written by
    `python -m training.grpo` / `training.sft`); {} for any other policy. `None` reads the
    default policy's (see `resolve_policy`)."""
    if policy in (BUNDLED_POLICY, QWEN_POLICY):
        return {}
    try:
        folder = Path(resolve_policy(policy))  # a hub id gives a path without notes: {}
    except Exception:  # the options are a courtesy: a policy that cannot load fails later, clearly
        return {}
    try:
        options = json.loads((folder / "training.json").read_text(encoding="utf-8"))["agent"]
    except (TypeError, OSError, ValueError, KeyError):
        return {}
    return dict(options) if isinstance(options, dict) else {}


def _cut_at_stop(text: str, stops) -> tuple[str, str | None]:
    """Text up to the earliest stop string, and which one it was."""
    hits = [(text.find(s), s) for s in stops if s and s in text]
    if not hits:
        return text, None
    pos, stop = min(hits)
    return text[:pos], stop


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

    def generate(self, prompts: list[str], sampling: Sampling) -> list[Generation]:
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
        with self._lock, torch.inference_mode():
            if sampling.temperature > 0:
                torch.manual_seed(sampling.seed)
            out = self.model.generate(**batch, **kwargs)
        new = out[:, batch["input_ids"].shape[1]:]
        results = []
        for row in new:
            ids = [int(t) for t in row if int(t) != self.tokenizer.pad_token_id]
            ended = bool(ids) and ids[-1] == self.tokenizer.eos_token_id
            text, stop = _cut_at_stop(self.tokenizer.decode(ids, skip_special_tokens=True), sampling.stop)
            finish = "stop" if stop or ended else ("length" if len(ids) >= sampling.max_tokens else "stop")
            results.append(Generation(text, finish, stop, len(ids), ids))
        return results


# ---------------------------------------------------------------- vLLM (in-process)

class VLLMPolicy:
    backend = "vllm"

    def __init__(self, model: str, dtype: str | None = None, max_model_len: int = 8192, seed: int = 0,
                 cpu_kv_cache_gb: float = 1.0, **engine_kw):
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
            self.llm = LLM(model=model, dtype=dtype, max_model_len=max_model_len, seed=seed, enforce_eager=True,
                           **engine_kw)
        except Exception as err:  # engine start-up fails in many ways; say which model and why
            raise PolicyError(f"cannot start vLLM on {model!r}: {type(err).__name__}: {err}") from err
        self._lock = threading.Lock()

    def generate(self, prompts: list[str], sampling: Sampling) -> list[Generation]:
        from vllm import SamplingParams

        if not prompts:
            return []
        params = SamplingParams(max_tokens=sampling.max_tokens, temperature=sampling.temperature,
                                stop=list(sampling.stop) or None, seed=sampling.seed)
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
        data = json.dumps(payload).encode() if payload is not None else None
        req = urllib.request.Request(self.base_url + path, data=data, method="POST" if data else "GET",
                                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {self.api_key}"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as err:
            raise PolicyError(f"model server {self.base_url} answered {err.code}: {err.read()[:300]!r}") from err
        except (http.client.HTTPException, ConnectionResetError) as err:  # it went away while answering
            raise PolicyError(f"model server {self.base_url} broke off its answer ({type(err).__name__}: {err}); "
                              "has it stopped?") from err
        except (urllib.error.URLError, OSError, ValueError) as err:
            raise PolicyError(f"model server {self.base_url} is not reachable ({err}); is it running?") from err

    def _served_model(self) -> str:
        models = self._request("/models").get("data") or []
        if not models:
            raise PolicyError(f"model server {self.base_url} serves no model")
        return models[0]["id"]

    def generate(self, prompts: list[str], sampling: Sampling) -> list[Generation]:
        if not prompts:
            return []
        body = self._request("/completions", {
            "model": self.name, "prompt": list(prompts), "max_tokens": sampling.max_tokens,
            "temperature": sampling.temperature, "stop": list(sampling.stop) or None, "seed": sampling.seed})
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
    model = resolve_policy(policy)
    if backend == "vllm":
        return VLLMPolicy(model, **kw)
    if backend == "transformers":
        return TransformersPolicy(model)
    raise PolicyError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
