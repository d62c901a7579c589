"""QA data sets (XQuAD, TyDi QA GoldP, MKQA), their article-level splits and coverage rules.

Files are read from a local copy when there is one (`config.data_dir`), else from the
Hugging Face hub with `datasets`. Everything that decides *which* question or paragraph
goes where (EVAL.md's split and partial-coverage rules) lives here, so the index builder,
the evaluation and the training data all agree.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from crosearch_agent.config import data_dir as resolve_data_dir
from crosearch_agent.languages import XQUAD_LANGS

BOM = "\ufeff"
COVERAGE = 3  # xquad-partial: each paragraph is indexed in this many languages


class DataNotFound(RuntimeError):
    """A data set is neither in the local data folder nor reachable on the hub."""


@dataclass(frozen=True)
class Paragraph:
    dataset: str
    lang: str
    title: str
    index: int       # position of the paragraph in its article
    context: str

    @property
    def doc_id(self) -> str:
        """Cross-language key: the same paragraph has the same doc_id in every language."""
        return f"{self.title}/{self.index}"


@dataclass(frozen=True)
class Question:
    id: str          # shared by the translations of one question (XQuAD ids are parallel)
    lang: str
    question: str
    answers: tuple[str, ...]
    dataset: str
    title: str = ""
    paragraph: int = -1
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def doc_id(self) -> str:
        return f"{self.title}/{self.paragraph}"


# ---------------------------------------------------------------- splits and coverage

def xquad_split(title: str) -> str:
    """EVAL.md's article-level split: test if h < 3, dev if h < 5, else train."""
    h = int(hashlib.sha256(title.encode("utf-8")).hexdigest(), 16) % 10
    return "test" if h < 3 else "dev" if h < 5 else "train"


def partial_languages(title: str, paragraph: int) -> list[str]:
    """The 3 languages whose index holds this paragraph in `xquad-partial` (EVAL.md)."""
    return random.Random(f"{title}/{paragraph}").sample(sorted(XQUAD_LANGS), COVERAGE)


def is_local(question: Question) -> bool:
    """In xquad-partial, is the gold paragraph in the question's own language's index?"""
    return question.lang in partial_languages(question.title, question.paragraph)


# ---------------------------------------------------------------- SQuAD-format files

def read_squad(path: Path, lang: str, dataset: str) -> tuple[list[Paragraph], list[Question]]:
    """Paragraphs and questions of one SQuAD v1.1 JSON file (XQuAD, TyDi GoldP)."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise DataNotFound(f"cannot read {dataset} file {path}: {err}") from err
    paragraphs, questions = [], []
    for article in raw["data"]:
        title = article["title"].lstrip(BOM)
        for p, par in enumerate(article["paragraphs"]):
            # Some th/ar/zh XQuAD contexts start with a BOM; answer offsets are not used.
            paragraphs.append(Paragraph(dataset, lang, title, p, par["context"].lstrip(BOM).strip()))
            for qa in par["qas"]:
                answers = tuple(dict.fromkeys(a["text"].strip() for a in qa["answers"]))
                questions.append(Question(qa["id"], lang, qa["question"].strip(), answers, dataset, title, p))
    return paragraphs, questions


def _group_rows(rows, lang: str, dataset: str, titles: dict[str, str] | None = None):
    """Hub rows (one per question) back into SQuAD-style paragraphs and questions."""
    paragraphs, questions, index = [], [], {}
    for row in rows:
        title = (titles or {}).get(row["id"]) or row.get("title") or "untitled"
        key = (title, row["context"])
        if key not in index:
            index[key] = sum(1 for t, _ in index if t == title)
            paragraphs.append(Paragraph(dataset, lang, title, index[key], row["context"].lstrip(BOM).strip()))
        answers = tuple(dict.fromkeys(a.strip() for a in row["answers"]["text"]))
        questions.append(Question(row["id"], lang, row["question"].strip(), answers, dataset, title, index[key]))
    return paragraphs, questions


def _from_hub(description: str, local_hint: str, load):
    """Run `load()` against the hub, turning 'no network' into a short, actionable error."""
    try:
        import datasets  # noqa: F401  (imported here: slow, and only needed for the hub)
        from huggingface_hub import constants

        if constants.HF_HUB_OFFLINE:
            raise ConnectionError("HF_HUB_OFFLINE is set")
        _check_reachable(constants.ENDPOINT)
        return load()
    except Exception as err:  # the hub raises many kinds; the message is what matters
        raise DataNotFound(_missing(description, local_hint, f"{type(err).__name__}: {err}")) from err


def _missing(description: str, local_hint: str, why: str) -> str:
    return (f"{description} is not available: no local copy, and the Hugging Face hub failed ({why}). "
            f"Point at a local copy with --data-dir DIR or CROSEARCH_DATA_DIR=DIR, where DIR holds {local_hint}.")


def _check_reachable(endpoint: str, timeout: float = 3.0) -> None:
    import socket
    from urllib.parse import urlparse

    url = urlparse(endpoint)
    # Fail in seconds, not after the hub client's long retry loop.
    socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()


# ---------------------------------------------------------------- XQuAD

def load_xquad(lang: str, data_dir=None) -> tuple[list[Paragraph], list[Question]]:
    """One XQuAD language: 48 articles, 240 paragraphs, 1190 questions."""
    root = resolve_data_dir(data_dir)
    path = root / "xquad" / f"xquad.{lang}.json" if root else None
    if path and path.exists():
        return read_squad(path, lang, "xquad")

    def load():
        import datasets

        rows = datasets.load_dataset("google/xquad", f"xquad.{lang}", split="validation")
        # The hub copy has no titles; XQuAD reuses SQuAD v1.1 dev ids, which do.
        squad = datasets.load_dataset("rajpurkar/squad", split="validation")
        return _group_rows(rows, lang, "xquad", dict(zip(squad["id"], squad["title"])))

    return _from_hub(f"XQuAD ({lang})", f"xquad/xquad.{lang}.json", load)


def xquad_questions(langs=XQUAD_LANGS, split: str | None = None, data_dir=None) -> list[Question]:
    out = []
    for lang in langs:
        out += [q for q in load_xquad(lang, data_dir)[1] if split is None or xquad_split(q.title) == split]
    return out


# ---------------------------------------------------------------- TyDi QA GoldP

TYDI_LANGS = {"arabic": "ar", "bengali": "bn", "english": "en", "finnish": "fi", "indonesian": "id",
              "japanese": "ja", "korean": "ko", "russian": "ru", "swahili": "sw", "telugu": "te", "thai": "th"}


def tydiqa_files(root: Path, split: str) -> dict[str, Path]:
    """`<language>_tydiqa_<split>.json` files in a folder, by language code."""
    found = {}
    for path in sorted(Path(root).glob(f"*_tydiqa_{split}.json")):
        name = path.name.split("_tydiqa_")[0].lower()
        found[TYDI_LANGS.get(name, name)] = path
    return found


def load_tydiqa(split: str = "train", langs=None, data_dir=None, folder: str = "tydiqa_goldp"):
    """TyDi QA GoldP in SQuAD format, per language. Not parallel: each passage is its own."""
    root = resolve_data_dir(data_dir)
    files = tydiqa_files(root / folder, split) if root and (root / folder).is_dir() else {}
    if root and not files and any(root.glob(f"*_tydiqa_{split}.json")):
        files = tydiqa_files(root, split)  # --data-dir may point at the folder itself
    if files:
        paragraphs, questions = [], []
        for lang, path in files.items():
            if langs is None or lang in langs:
                p, q = read_squad(path, lang, "tydiqa-goldp")
                paragraphs += p
                questions += q
        return paragraphs, questions

    def load():
        import datasets

        hub_split = {"dev": "validation"}.get(split, split)
        rows = datasets.load_dataset("google-research-datasets/tydiqa", "secondary_task", split=hub_split)
        paragraphs, questions = [], []
        by_lang: dict[str, list] = {}
        for row in rows:  # ids start with the language name, e.g. "english-123..."
            lang = TYDI_LANGS.get(row["id"].split("-")[0], "xx")
            if langs is None or lang in langs:
                by_lang.setdefault(lang, []).append(row)
        for lang, lang_rows in by_lang.items():
            p, q = _group_rows(lang_rows, lang, "tydiqa-goldp")
            paragraphs += p
            questions += q
        return paragraphs, questions

    return _from_hub(f"TyDi QA GoldP ({split})", f"{folder}/<language>_tydiqa_{split}.json", load)


# ---------------------------------------------------------------- MKQA

def read_mkqa(path: Path, langs=None) -> list[Question]:
    """MKQA `.jsonl.gz`: one record per question, parallel in 26 languages, no passages."""
    questions = []
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            rec = json.loads(line)
            for lang, text in rec["queries"].items():
                if langs is not None and lang not in langs:
                    continue
                answers = []
                for ans in rec["answers"].get(lang, []):
                    answers += [a for a in [ans.get("text")] + list(ans.get("aliases") or []) if a]
                questions.append(Question(str(rec["example_id"]), lang, text.strip(), tuple(dict.fromkeys(answers)),
                                          "mkqa", extra={"answer_type": (rec["answers"].get(lang) or [{}])[0].get("type")}))
    return questions


def load_mkqa(langs=None, data_dir=None) -> list[Question]:
    root = resolve_data_dir(data_dir)
    for candidate in ([root / "mkqa" / "mkqa.jsonl.gz", root / "mkqa_sample" / "test_mkqa.jsonl.gz"] if root else []):
        if candidate.exists():
            return read_mkqa(candidate, langs)

    def load():
        import datasets

        questions = []
        for rec in datasets.load_dataset("apple/mkqa", split="train"):
            for lang, text in rec["queries"].items():
                if langs is None or lang in langs:
                    ans = rec["answers"][lang]
                    texts = [a["text"] for a in ans if a.get("text")] + [x for a in ans for x in (a.get("aliases") or [])]
                    questions.append(Question(str(rec["example_id"]), lang, text, tuple(dict.fromkeys(texts)), "mkqa"))
        return questions

    return _from_hub("MKQA", "mkqa/mkqa.jsonl.gz", load)
