"""Where things live and the knobs everyone shares, in one typed place.

`Settings` holds every option the command-line tools have in common; each field's
`help` metadata becomes its `--flag` help text, so the CLI and the code cannot drift.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
BUNDLED_EMBEDDER = "bundled:multilingual-e5-small"


def data_home() -> Path:
    """Generated artefacts (models, indexes, checkpoints): `CROSEARCH_HOME` or `.crosearch/`."""
    return Path(os.environ.get("CROSEARCH_HOME") or REPO_ROOT / ".crosearch").resolve()


def models_home() -> Path:
    """The bundled models: `CROSEARCH_MODELS`, else `<data home>/models`. Kept apart so that
    several data homes (tests, experiments) can share one copy of the weights."""
    return Path(os.environ.get("CROSEARCH_MODELS") or data_home() / "models").resolve()


def data_dir(explicit: str | os.PathLike | None = None) -> Path | None:
    """Local copies of the QA data sets: `--data-dir`, `CROSEARCH_DATA_DIR`, `../shared/data`.

    None means "no local copy": loaders then go to the Hugging Face hub.
    """
    for candidate in (explicit, os.environ.get("CROSEARCH_DATA_DIR")):
        if candidate:
            return Path(candidate).expanduser().resolve()
    shared = REPO_ROOT.parent / "shared" / "data"
    return shared.resolve() if shared.is_dir() else None


def language_codes(text: str) -> list[str]:
    """One `--languages` argument: `de`, or several joined by commas (`de,zh`); an unknown
    code is refused by name (argparse turns this into a usage error)."""
    from crosearch_agent.languages import NAMES

    codes = [c.strip().lower() for c in text.split(",") if c.strip()]
    unknown = [c for c in codes if c not in NAMES]
    if unknown or not codes:
        raise argparse.ArgumentTypeError(f"unknown language code {', '.join(map(repr, unknown or [text]))}; "
                                         f"known: {' '.join(sorted(NAMES))}")
    return codes


class _Languages(argparse.Action):
    """`--languages de,zh ar` -> ["de", "zh", "ar"] (each argument parsed by `language_codes`)."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, list(dict.fromkeys(code for codes in values for code in codes)))


def _opt(default, help: str, **kw):
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class Settings:
    collection: str = _opt("xquad-partial", "collection to search; combine with '+', e.g. xquad-partial+wiki-summaries")
    languages: list[str] | None = _opt(None, "languages to index/search, e.g. 'de zh' or 'de,zh' (default: all languages of the collection)", nargs="+", type=language_codes, action=_Languages)
    embedder: str = _opt(BUNDLED_EMBEDDER, "sentence-transformers model id or folder (default: the bundled multilingual-e5-small)")
    index_type: str = _opt("flat", "FAISS index: 'flat' (exact inner product) or 'hnsw' (approximate, for large collections)", choices=["flat", "hnsw"])
    k: int = _opt(5, "evidence items returned per search")
    align_threshold: float = _opt(0.75, "least cosine for two mutually closest passages in different languages to count as translations")
    rrf_k: int = _opt(60, "reciprocal rank fusion constant: vote = exp(score_weight * z) / (rrf_k + rank)")
    score_weight: float = _opt(2.0, "weight of a hit's within-language standardised score in rank fusion (0: plain RRF)")
    detector: str = _opt("py3langid", "language detector", choices=["py3langid", "langdetect"])
    backend: str | None = _opt(None, "policy backend: vllm (in-process), openai (a running server) or transformers; default: vllm when installed", choices=["vllm", "openai", "transformers"])
    policy: str | None = _opt(None, "policy model folder or hub id (default: the newest training checkpoint, else the bundled Gemma 3 270M)")
    base_url: str | None = _opt(None, "OpenAI-compatible server for --backend openai, e.g. http://127.0.0.1:8000/v1")
    max_turns: int = _opt(3, "most search turns before the policy must answer")
    force_first_search: bool = _opt(True, "start with the user's question as the first search (base models rarely search unprompted)", type=lambda v: str(v).lower() in ("1", "true", "yes", "on"))
    force_global_search: bool = _opt(True, "after the forced local search, also search every language with the question (base models rarely search twice)", type=lambda v: str(v).lower() in ("1", "true", "yes", "on"))
    temperature: float = _opt(0.0, "sampling temperature of the policy (0: greedy)")
    max_new_tokens: int = _opt(128, "most tokens the policy may write per turn")
    few_shot: int = _opt(3, "worked examples in the prompt (XQuAD train split), 0 for none")
    data_dir: str | None = _opt(None, "folder with local copies of the data sets (else CROSEARCH_DATA_DIR, ../shared/data, then the hub)")
    seed: int = _opt(0, "random seed")
    retriever_url: str | None = _opt(None, "use a running retrieval service (python -m crosearch_agent.serve_retrieval) instead of loading indexes, e.g. http://127.0.0.1:8100")

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser, only: list[str] | None = None) -> None:
        for f in dataclasses.fields(cls):
            if only is not None and f.name not in only:
                continue
            meta = dict(f.metadata)
            help_text = meta.pop("help")
            flag = "--" + f.name.replace("_", "-")
            if f.type in ("int", "float"):  # annotations are strings here (postponed evaluation)
                meta.setdefault("type", {"int": int, "float": float}[f.type])
            parser.add_argument(flag, dest=f.name, default=f.default, help=f"{help_text} (default: %(default)s)", **meta)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "Settings":
        """The settings parsed by `add_arguments` (nothing else is read or changed: serving a
        trained policy with its options is `policy.adopt_trained_options`, called by the CLIs)."""
        names = {f.name for f in dataclasses.fields(cls)}
        settings = cls(**{k: v for k, v in vars(args).items() if k in names})
        return settings


def flags_given(argv=None) -> set[str]:
    """Names of the `--flags` on a command line (`--few-shot 0` and `--few-shot=0` -> few_shot);
    None reads this process's own."""
    argv = sys.argv[1:] if argv is None else argv
    return {a[2:].split("=", 1)[0].replace("-", "_") for a in argv if isinstance(a, str) and a.startswith("--")}
