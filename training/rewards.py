"""GRPO rewards, each logged on its own: the answer (F1 or EM against the gold in the
rollout's language), the format (every policy turn well formed, ending in a closed answer)
and the answer's language (the question's).

The scoring functions are plain; `reward_funcs` wraps them in TRL's signature
(`prompts, completions, **columns -> list[float]`), reading what the rollout returned
(`answer`, `golds`, `golds_by_lang`, `lang`, `turns`, `answered`) rather than re-parsing
completions.
"""
from __future__ import annotations

from crosearch_agent import metrics, prompts


def answer_score(answer: str | None, golds, lang: str, metric: str = "f1") -> float:
    """F1 (or EM) of the answer against the golds in `lang`; no answer scores 0."""
    if not answer or not answer.strip():
        return 0.0
    if metric == "em":
        return metrics.em(answer, golds, lang)
    return metrics.f1(answer, golds, lang)


def format_score(turns: list[str], answered: bool) -> float:
    """Share of the policy's turns that `prompts.parse_turn` finds well formed, halved when
    the trajectory did not end in a closed `<answer>` (the agent had to force one)."""
    if not turns:
        return 0.0
    ok = sum(prompts.parse_turn(t).well_formed for t in turns) / len(turns)
    return ok if answered else 0.5 * ok


def language_score(answer: str | None, lang: str, golds=(), golds_by_lang=None) -> float:
    """1 when the answer is written the way the question's language writes it (EVAL.md's
    "Lang", `metrics.in_question_language`, judged with the rollout's golds and, where given,
    the question's parallel golds in every language: another language's gold fails); answers
    without letters (numbers, dates) count as right, an empty answer as wrong."""
    if not answer or not answer.strip():
        return 0.0
    ok = metrics.in_question_language(answer, lang, golds, golds_by_lang=golds_by_lang)
    return 1.0 if ok is None else float(ok)


def reward_funcs(metric: str = "f1") -> list:
    """The three rewards in TRL's form, in the order of `REWARD_NAMES`."""

    def answer(prompts, completions, answer, golds, lang, **_):
        return [answer_score(a, g, l, metric) for a, g, l in zip(answer, golds, lang)]

    def format(prompts, completions, turns, answered, **_):  # noqa: A001 (the name TRL logs)
        return [format_score(t, ok) for t, ok in zip(turns, answered)]

    def language(prompts, completions, answer, golds, lang, golds_by_lang=None, **_):
        by_lang = golds_by_lang or [None] * len(answer)
        return [language_score(a, l, g, b) for a, g, l, b in zip(answer, golds, lang, by_lang)]

    return [answer, format, language]


REWARD_NAMES = ("answer", "format", "language")
