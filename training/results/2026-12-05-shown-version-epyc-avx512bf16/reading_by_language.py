"""Reading by passage language: each cross-lingual XQuAD question of a split (30 per language,
xquad-partial) gets its gold paragraph alone, through the oracle method's protocol, once in
English (German for English questions) and once in each language the collection indexes it in.

    python training/results/2026-12-05-shown-version-epyc-avx512bf16/reading_by_language.py \
        dev <data home>/models/crosearch-reader-270m reading_by_language.json
"""
import collections
import json
import statistics
import sys

from crosearch_agent import qa_data
from crosearch_agent.agent import Agent
from crosearch_agent.config import Settings
from crosearch_agent.eval import ORACLE_CHARS, OracleRetriever, parallel_golds, qa_questions
from crosearch_agent.evidence import Evidence, Hit
from crosearch_agent.metrics import score_answer
from crosearch_agent.policy import load_policy
from crosearch_agent.policy_folders import adopt_trained_options
from crosearch_agent.prompts import excerpt
from crosearch_agent.retriever import load_retriever
from crosearch_agent.store import Passage


def main(split: str, policy_path: str, out: str) -> None:
    settings = Settings(policy=policy_path)
    adopt_trained_options(settings)
    retriever = load_retriever(settings)
    local = {lang: retriever.doc_ids(lang) for lang in retriever.languages}
    cross = [q for q in qa_questions("xquad", split, None, 30) if q.doc_id not in local[q.lang]]
    golds = parallel_golds(cross, split)
    xquad = {}

    def passage(q, lang):
        if lang not in xquad:
            paragraphs, questions = qa_data.load_xquad(lang)
            xquad[lang] = ({p.doc_id: p.context.lstrip("\ufeff") for p in paragraphs}, {x.id: x for x in questions})
        contexts, by_id = xquad[lang]
        answer = by_id[q.id].answers[0] if q.id in by_id and by_id[q.id].answers else ""
        return Passage(f"o/{lang}/{q.doc_id}", lang, q.title, excerpt(contexts[q.doc_id], answer, ORACLE_CHARS),
                       q.doc_id, source="xquad")

    policy = load_policy(None, settings.policy)
    rows = []
    for slot in ["en", 0, 1, 2]:  # English, then the 1st, 2nd, 3rd indexed language (sorted)
        evidence = {}
        for q in cross:
            indexed = sorted(lang for lang in retriever.languages if q.doc_id in local[lang])
            lang = slot if slot == "en" else indexed[slot]
            lang = "de" if lang == q.lang else lang
            evidence[(q.question.strip(), q.lang)] = [Evidence(1, 1.0, [Hit(passage(q, lang), 1.0, 1)])]
        agent = Agent(policy, OracleRetriever(retriever.languages, evidence), settings, "oracle")
        results = agent.run_batch([q.question for q in cross], [q.lang for q in cross])
        for q, r in zip(cross, results):
            score = score_answer(r.answer or "", q.answers, q.lang, golds.get(q.id))
            rows.append(dict(slot=str(slot), plang=evidence[(q.question.strip(), q.lang)][0].lang, qlang=q.lang,
                             id=q.id, answer=r.answer, f1=score["f1"], em_any=score["em_any"]))
    if hasattr(policy, "close"):
        policy.close()
    json.dump(rows, open(out, "w"))
    # Each passage language's F1 less the mean of the same question's versions (paired).
    by_question = collections.defaultdict(dict)
    for r in rows:
        by_question[(r["id"], r["qlang"])][r["plang"]] = r["f1"]
    effect = collections.defaultdict(list)
    for versions in by_question.values():
        mean = statistics.mean(versions.values())
        for lang, f1 in versions.items():
            effect[lang].append(f1 - mean)
    for lang, values in sorted(effect.items(), key=lambda t: -statistics.mean(t[1])):
        print(lang, len(values), round(statistics.mean(values), 3))


if __name__ == "__main__":
    main(*sys.argv[1:4])
