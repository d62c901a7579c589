"""Training examples: XQuAD train-split questions (all languages, parallel) and TyDi GoldP
train questions, the multilingual grouping of GRPO rollouts, and the guard that keeps dev
and test articles out of training, in every language.

An `Example` is one GRPO prompt: a question group (the translations of one question share
its `group` id) seen from one language (`lang`). Its rollouts are spread over several of
the group's languages (`rollout_languages`), each scored against its own language's gold.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

from typing import TYPE_CHECKING

from crosearch_agent import qa_data
from crosearch_agent.config import uses_services
from crosearch_agent.evidence import without
from crosearch_agent.languages import XQUAD_LANGS

if TYPE_CHECKING:
    from training.config import TrainConfig

TRAIN_SPLIT = "train"


@dataclass(frozen=True)
class Variant:
    """The question and its gold answers in one language."""
    lang: str
    question: str
    answers: tuple[str, ...]


@dataclass(frozen=True)
class Example:
    key: str                    # unique row key, e.g. "xquad/<id>/de"; what the GRPO dataset's prompt column holds
    group: str                  # shared by the translations of one question
    dataset: str                # xquad or tydiqa-goldp
    collection: str             # the collection its rollouts search
    lang: str                   # the row's own language
    title: str
    paragraph: int
    variants: dict = field(default_factory=dict, compare=False, hash=False)  # lang -> Variant

    @property
    def doc_id(self) -> str:
        return f"{self.title}/{self.paragraph}"

    def variant(self, lang: str | None = None) -> Variant:
        return self.variants[lang or self.lang]

    @property
    def golds_by_lang(self) -> dict[str, list[str]]:
        return {lang: list(v.answers) for lang, v in self.variants.items()}


# ---------------------------------------------------------------- loading

def xquad_groups(langs=XQUAD_LANGS, data_dir=None) -> dict[str, dict[str, qa_data.Question]]:
    """Train-split XQuAD questions by id, then by language (only ids present in every language)."""
    by_id: dict[str, dict[str, qa_data.Question]] = {}
    for q in qa_data.xquad_questions(list(langs), TRAIN_SPLIT, data_dir):
        by_id.setdefault(q.id, {})[q.lang] = q
    return {qid: group for qid, group in by_id.items() if len(group) == len(langs)}


def xquad_examples(langs=XQUAD_LANGS, collection: str = "xquad-partial", data_dir=None) -> list[Example]:
    """One example per (train question, language): the 12 translations share a group."""
    out = []
    for qid, group in sorted(xquad_groups(langs, data_dir).items()):
        variants = {lang: Variant(lang, q.question, q.answers) for lang, q in sorted(group.items())}
        any_q = next(iter(group.values()))
        for lang in sorted(group):
            out.append(Example(f"xquad/{qid}/{lang}", f"xquad/{qid}", "xquad", collection, lang,
                               any_q.title, any_q.paragraph, variants))
    return out


def tydiqa_examples(langs=None, collection: str = "tydiqa-goldp", data_dir=None) -> list[Example]:
    """TyDi GoldP train questions: not parallel, so each is a group of one language."""
    out = []
    for q in qa_data.load_tydiqa("train", langs, data_dir)[1]:
        if q.answers:
            out.append(Example(f"tydiqa/{q.id}", f"tydiqa/{q.id}", "tydiqa-goldp", collection, q.lang,
                               q.title, q.paragraph, {q.lang: Variant(q.lang, q.question, q.answers)}))
    return out


def load_examples(cfg, n: int | None = None, data_dir=None) -> list[Example]:
    """The run's examples, shuffled with its seed: XQuAD train rows, plus TyDi rows at
    `cfg.tydiqa_share` of the total when that is above zero. `n` 0: every XQuAD train row
    and, when `tydiqa_share` is above zero, every TyDi train row."""
    rng = random.Random(f"{cfg.seed}/examples")
    xquad = xquad_examples(cfg.languages, cfg.agent.collection, data_dir)
    rng.shuffle(xquad)
    examples = xquad
    if n == 0:
        examples = xquad + (tydiqa_examples(None, cfg.tydiqa_collection, data_dir) if cfg.tydiqa_share > 0 else [])
        rng.shuffle(examples)
    elif cfg.tydiqa_share > 0:
        tydi = tydiqa_examples(None, cfg.tydiqa_collection, data_dir)
        rng.shuffle(tydi)
        total = n or len(xquad)
        n_tydi = min(len(tydi), round(total * cfg.tydiqa_share))
        examples = xquad[:total - n_tydi] + tydi[:n_tydi]
        rng.shuffle(examples)
    examples = examples[:n] if n else examples
    assert_train_only(examples)
    return examples


# ---------------------------------------------------------------- the split guard

def assert_train_only(examples) -> None:
    """Refuse any XQuAD example from a dev or test article (EVAL.md: never, in any language)."""
    bad = sorted({e.title for e in examples if e.dataset == "xquad" and qa_data.xquad_split(e.title) != TRAIN_SPLIT})
    if bad:
        raise ValueError(f"training examples from dev/test XQuAD articles: {bad[:5]}")


def heldout_passage(passage) -> bool:
    """Is this passage from a dev or test XQuAD article (in any language)?"""
    if passage.source != "xquad":
        return False
    title = passage.doc_id.rsplit("/", 1)[0]
    return qa_data.xquad_split(title) != TRAIN_SPLIT


class TrainOnlyRetriever:
    """The real retriever, minus evidence from dev/test XQuAD articles.

    The collections hold every article (the app must find them all), but a policy trained
    with test passages in its context could learn test facts. Searching a little deeper
    and dropping held-out items keeps `k` items per search.
    """

    def __init__(self, retriever, extra: int = 10):
        self.inner, self.extra = retriever, extra

    @property
    def languages(self):
        return self.inner.languages

    @property
    def embedder(self):
        return self.inner.embedder

    def search(self, query: str, languages=None, k: int = 5, query_lang: str | None = None):
        return without(self.inner.search(query, languages, k + self.extra, query_lang), heldout_passage, k)


# ---------------------------------------------------------------- multilingual groups

def rollout_languages(example: Example, n_langs: int, multilingual: bool = True, seed: int = 0) -> list[str]:
    """The languages a group's rollouts are spread over: the row's own language, then
    English, then others drawn (seeded by the row) from the group's languages."""
    if not multilingual or n_langs <= 1:
        return [example.lang]
    langs = [example.lang]
    if "en" in example.variants and example.lang != "en":
        langs.append("en")
    others = sorted(set(example.variants) - set(langs))
    random.Random(f"{seed}/{example.key}").shuffle(others)
    return (langs + others)[:n_langs]


def assign_languages(example: Example, num_generations: int, n_langs: int, multilingual: bool = True,
                     seed: int = 0) -> list[str]:
    """The language of each of a group's `num_generations` rollouts, round-robin."""
    langs = rollout_languages(example, n_langs, multilingual, seed)
    return [langs[j % len(langs)] for j in range(num_generations)]


def make_agent_factory(cfg: TrainConfig):
    """`agent_for(collection)`: one agent per collection, sharing one embedder, searching
    train-split evidence only."""
    from crosearch_agent.agent import Agent
    from crosearch_agent.embedder import Embedder
    from crosearch_agent.retriever import load_retriever
    from crosearch_agent.store import StoreError
    from training.config import agent_settings

    agents, embedder = {}, []

    def agent_for(collection: str):
        if collection not in agents:
            settings = agent_settings(cfg, collection)
            if not embedder and not uses_services(settings):
                embedder.append(Embedder(cfg.agent.embedder))
            try:
                retriever = load_retriever(settings, embedder[0] if embedder else None)
            except StoreError as err:
                raise StoreError(f"{err}\n(build it with: python -m indexes.build --collection {collection})") from err
            agents[collection] = Agent(None, TrainOnlyRetriever(retriever), settings)
        return agents[collection]

    return agent_for
