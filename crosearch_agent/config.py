"""Where things live and the knobs everyone shares, in one typed place.

`Settings` holds every option the command-line tools have in common. Options are dataclass
fields made with `option`, whose help text (and any argparse keywords) `add_arguments` turns
into `--flags`, so the CLI and the code cannot drift; training's config
(`training.config.TrainConfig`) is parsed by the same function, with these settings nested
in it as `--agent.NAME`.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
BUNDLED_EMBEDDER = "bundled:multilingual-e5-small"
# 0.75 aligned mostly neighbours: in xquad-partial (a paragraph missing from some languages)
# 79% of aligned pairs were two different paragraphs, and an item shows its query-language
# member, so a cross-lingual gold was hidden behind a local neighbour. At 0.85, 96% of the
# pairs are translations and crosearch's cross F1 rose 0.16 -> 0.23 on dev, 0.16 -> 0.18 on
# test (training/results/2026-12-04-align-threshold-epyc-avx512bf16).
ALIGN_THRESHOLD = 0.85


def data_home() -> Path:
    """Generated artefacts (models, indexes, checkpoints): `CROSEARCH_HOME` or `.crosearch/`."""
    return Path(os.environ.get("CROSEARCH_HOME") or REPO_ROOT / ".crosearch").resolve()


def models_home() -> Path:
    """The bundled models: `CROSEARCH_MODELS`, else `<data home>/models`. Kept apart so that
    several data homes (tests, experiments) can share one copy of the weights."""
    return Path(os.environ.get("CROSEARCH_MODELS") or data_home() / "models").resolve()


def portable(value):
    """`value` with this machine's folders named by role (`<data home>`, `<repo>`), so a
    report can be committed and read elsewhere."""
    if isinstance(value, str):
        for folder, name in ((data_home(), "<data home>"), (REPO_ROOT, "<repo>"), (REPO_ROOT.parent, "<repo>/..")):
            value = value.replace(str(folder), name)
        return value
    if isinstance(value, dict):
        return {k: portable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [portable(v) for v in value]
    return value


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


SERVICES_EXAMPLE = "de,en,zh=http://a:8100;ar,hi,th=http://b:8100"


def parse_services(text: str) -> dict[str, list[str]]:
    """`--retriever-urls`: 'de,en,zh=http://a:8100;ar,hi,th=http://b:8100' -> {url: [languages]}.

    Entries are separated by ';' or spaces; each language belongs to one service (a URL may
    appear in several entries: its languages add up)."""
    from crosearch_agent.languages import NAMES

    entries = [e for e in re.split(r"[;\s]+", text or "") if e]
    if not entries:
        raise ValueError(f"no retrieval services given; expected LANGUAGES=URL entries, e.g. '{SERVICES_EXAMPLE}'")
    services: dict[str, list[str]] = {}
    owner: dict[str, str] = {}
    for entry in entries:
        langs, sep, url = entry.partition("=")
        if not sep or not langs.strip(",") or not url:
            raise ValueError(f"{entry!r} is not LANGUAGES=URL (e.g. '{SERVICES_EXAMPLE}')")
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"{url!r} is not an http:// or https:// URL (in {entry!r})")
        url = url.rstrip("/")
        codes = [c.strip().lower() for c in langs.split(",") if c.strip()]
        unknown = [c for c in codes if c not in NAMES]
        if unknown:
            raise ValueError(f"unknown language code {', '.join(map(repr, unknown))} in {entry!r}; "
                             f"known: {' '.join(sorted(NAMES))}")
        for code in codes:
            if owner.setdefault(code, url) != url:
                raise ValueError(f"language {code!r} is given to two services ({owner[code]} and {url}); "
                                 "each language is searched at one")
            if code not in services.setdefault(url, []):
                services[url].append(code)
    return services


def service_map(text: str) -> str:
    """One `--retriever-urls` argument, checked now (a usage error names what is wrong) and
    kept as written; `parse_services` reads it."""
    try:
        parse_services(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def uses_services(settings) -> bool:
    """Whether `settings` search through retrieval services (no index or embedder loaded here)."""
    return bool(getattr(settings, "retriever_url", None) or getattr(settings, "retriever_urls", None))


class LanguageList(argparse.Action):
    """`--languages de,zh ar` -> ["de", "zh", "ar"] (each argument parsed by `language_codes`)."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, list(dict.fromkeys(code for codes in values for code in codes)))


def option(default=dataclasses.MISSING, help: str = "", *, factory=None, **argparse_kw):
    """A dataclass field with its command-line help; `argparse_kw` go to its `--flag`
    (`type`, `choices`, `nargs`...; `keys` names a dict's entries, one flag each)."""
    if factory is not None:
        return field(default_factory=factory, metadata={"help": help, **argparse_kw})
    return field(default=default, metadata={"help": help, **argparse_kw})


def parse_bool(text) -> bool:
    """A yes/no flag's value: true/false, yes/no, on/off, 1/0."""
    value = str(text).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not {text!r}")


def _flag_type(hint):
    """The argparse `type` for a field's type hint (None: plain text)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    hint = args[0] if len(args) == 1 else hint  # X | None -> X
    return {bool: parse_bool, int: int, float: float}.get(hint)


def add_arguments(parser, cls, only=None, exclude=(), prefix: str = "", overrides: bool = False) -> list[str]:
    """One `--flag` per field of the dataclass `cls`, named as the field (`--few-shot`; with
    `overrides` also `--few_shot`, the spelling of the YAML keys). A nested dataclass field's
    fields become `--NAME.FIELD`, a dict field with `keys` one `--NAME.KEY` per entry; `dest`
    is the dotted name. `overrides`: a flag left out is absent from the parsed namespace (the
    config file's value stands). Returns the dests added."""
    hints = typing.get_type_hints(cls)
    dests = []
    for f in dataclasses.fields(cls):
        if (only is not None and f.name not in only) or f.name in exclude:
            continue
        meta = dict(f.metadata)
        help_text = meta.pop("help", "")
        name = prefix + f.name
        if dataclasses.is_dataclass(hints[f.name]):
            dests += add_arguments(parser, hints[f.name], exclude=meta.get("exclude", ()), prefix=name + ".",
                                   overrides=overrides)
            continue
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        if "keys" in meta:
            for key in meta.pop("keys"):
                dests += _add_flag(parser, f"{name}.{key}", f"{help_text}: {key}", default.get(key), meta, overrides)
            continue
        kind = _flag_type(hints[f.name])
        if "type" not in meta and "action" not in meta and kind:
            meta["type"] = kind
        dests += _add_flag(parser, name, help_text, default, meta, overrides)
    return dests


def _add_flag(parser, name: str, help_text: str, default, meta: dict, overrides: bool) -> list[str]:
    flags = ["--" + name.replace("_", "-")]
    if overrides and "_" in name:
        flags.append("--" + name)
    text = f"{help_text} (default: {default})".replace("%", "%%")  # argparse formats help with %
    parser.add_argument(*flags, dest=name, default=argparse.SUPPRESS if overrides else default, help=text, **meta)
    return [name]


def nested(values: dict) -> dict:
    """Dotted keys as nested dicts: {"agent.k": 3} -> {"agent": {"k": 3}}."""
    out: dict = {}
    for key, value in values.items():
        *outer, last = key.split(".")
        node = out
        for part in outer:
            node = node.setdefault(part, {})
        node[last] = value
    return out


@dataclass
class Settings:
    collection: str = option("xquad-partial", "collection to search; combine with '+', e.g. xquad-partial+wiki-summaries")
    languages: list[str] | None = option(None, "languages to index/search, e.g. 'de zh' or 'de,zh' (default: all languages of the collection)", nargs="+", type=language_codes, action=LanguageList)
    embedder: str = option(BUNDLED_EMBEDDER, "sentence-transformers model id or folder (default: the bundled multilingual-e5-small)")
    index_type: str = option("flat", "FAISS index: 'flat' (exact inner product), 'hnsw' (approximate, fast, ~1.8 GB per 10^6 passages) or 'ivfpq' (compressed: ~70 MB per 10^6 in memory, vectors memory-mapped from disk for an exact re-rank)", choices=["flat", "hnsw", "ivfpq"])
    # Measured at 10^7 synthetic vectors (2,048 lists): nprobe 32 / rerank 200 reach recall@10 0.73,
    # 128 / 400 0.95, 256 / 1000 0.99 (benchmarks/results/2026-12-04-epyc-avx2).
    nprobe: int = option(256, "ivfpq indexes: inverted lists searched per query, of at most 2,048 (more: higher recall, slower search)")
    rerank: int = option(1000, "ivfpq indexes: candidates re-scored exactly from the vectors on disk (more: higher recall, more rows read per query)")
    k: int = option(5, "evidence items returned per search")
    align_threshold: float = option(ALIGN_THRESHOLD, "least cosine for two mutually closest passages in different languages to count as translations")
    rrf_k: int = option(60, "reciprocal rank fusion constant: vote = exp(score_weight * z) / (rrf_k + rank)")
    score_weight: float = option(2.0, "weight of a hit's within-language standardised score in rank fusion (0: plain RRF)")
    detector: str = option("py3langid", "language detector", choices=["py3langid", "langdetect"])
    backend: str | None = option(None, "policy backend: vllm (in-process), openai (a running server) or transformers; default: vllm when installed", choices=["vllm", "openai", "transformers"])
    policy: str | None = option(None, "policy model folder or hub id (default: the newest training checkpoint, else the bundled Gemma 3 270M)")
    base_url: str | None = option(None, "OpenAI-compatible server for --backend openai, e.g. http://127.0.0.1:8000/v1")
    max_turns: int = option(3, "most search turns before the policy must answer")
    force_first_search: bool = option(True, "start with the user's question as the first search (base models rarely search unprompted)")
    force_global_search: bool = option(True, "after the forced local search, also search every language with the question (base models rarely search twice)")
    repeat_evidence: bool = option(True, "let a later search show again what an earlier search of the same question showed; false: only new evidence (an item holding a passage shown before, in any language it is aligned with, is skipped), which also drops the translations that let sources be compared")
    temperature: float = option(0.0, "sampling temperature of the policy (0: greedy)")
    max_new_tokens: int = option(128, "most tokens the policy may write per turn")
    answer_script: bool = option(True, "write answers only in letters of the question language's scripts, Latin included (names, acronyms): a policy reading evidence in another script otherwise mixes it in")
    few_shot: int = option(3, "worked examples in the prompt (XQuAD train split), 0 for none")
    data_dir: str | None = option(None, "folder with local copies of the data sets (else CROSEARCH_DATA_DIR, ../shared/data, then the hub)")
    seed: int = option(0, "random seed")
    retriever_url: str | None = option(None, "use a running retrieval service (python -m crosearch_agent.serve_retrieval) instead of loading indexes, e.g. http://127.0.0.1:8100")
    retriever_urls: str | None = option(None, "languages spread over several retrieval services, each started with --languages: 'de,en,zh=http://a:8100;ar,hi,th=http://b:8100' (entries separated by ';' or spaces). The services are searched in parallel and the evidence fused here (with this process's --rrf-k, --align-threshold, --score-weight), exactly as in-process; a service that is down costs only its languages, which the evidence names", type=service_map)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser, only: list[str] | None = None) -> None:
        add_arguments(parser, cls, only)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "Settings":
        """The settings parsed by `add_arguments` (nothing else is read or changed: serving a
        trained policy with its options is `policy_folders.settings_from_command_line`, called by the CLIs)."""
        names = {f.name for f in dataclasses.fields(cls)}
        settings = cls(**{k: v for k, v in vars(args).items() if k in names})
        return settings


def flags_given(argv=None) -> set[str]:
    """Names of the `--flags` on a command line (`--few-shot 0` and `--few-shot=0` -> few_shot);
    None reads this process's own."""
    argv = sys.argv[1:] if argv is None else argv
    return {a[2:].split("=", 1)[0].replace("-", "_") for a in argv if isinstance(a, str) and a.startswith("--")}
