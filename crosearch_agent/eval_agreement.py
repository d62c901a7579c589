"""`python -m crosearch_agent.eval_agreement`: how well "Sources disagree" is detected.

Two sets of questions go through the agent's searches (the question's language, then every
language), each answered with its gold answer in the question's language, so that what is
measured is support and agreement, not the policy:

- changed: every language's version of the questions of `xquad-changed` (one copy of the
  asked number changed per paragraph), except the changed language's own; a case is detected
  when the verdict is "disagree" and names the changed language;
- unchanged: `xquad-partial` test questions, where every version should agree.

Writes results.json, results.md and rows.jsonl; the policy's own answers are scored for
support by `python -m crosearch_agent.eval` (its `support_*` and `disagree` columns).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
from pathlib import Path

from crosearch_agent.config import Settings, data_dir as default_data_dir, data_home
from crosearch_agent.policy import Generation


class GoldAnswers:
    """A backend that answers each question (read from its prompt) with its gold answer."""
    name, backend = "gold answers", "eval"

    def __init__(self, golds: dict[str, str]):
        self.golds = golds

    def generate(self, prompts_, sampling):
        out = []
        for prompt in prompts_:
            question = re.findall(r"Question: (.*)\n", prompt)[-1].strip()
            out.append(Generation(f"I read the documents.</think>\n<answer>{self.golds.get(question, '')}", "stop", "</answer>"))
        return out


def _run(settings: Settings, questions, label: str, changed: dict | None = None) -> list[dict]:
    from tqdm import tqdm

    from crosearch_agent.agent import Agent
    from crosearch_agent.eval import ensure_index
    from crosearch_agent.retriever import load_retriever
    from crosearch_agent.support import explain

    ensure_index(settings)
    retriever = load_retriever(settings)
    questions = [q for q in questions if q.lang in retriever.languages]
    agent = Agent(GoldAnswers({q.question.strip(): q.answers[0] for q in questions}), retriever,
                  dataclasses.replace(settings, few_shot=0, max_turns=2, force_first_search=True, force_global_search=True))
    rows = []
    for start in tqdm(range(0, len(questions), 32), desc=label, unit="batch"):
        batch = questions[start:start + 32]
        for q, result in zip(batch, agent.run_batch([q.question for q in batch], [q.lang for q in batch])):
            found, agreed = explain(result, retriever.embedder)
            row = {"set": label, "id": q.id, "query_lang": q.lang, "answer": result.answer,
                   "support": found[0].how if found else None, "support_lang": found[0].lang if found else None,
                   "support_gold": bool(found) and found[0].doc_id == q.doc_id,
                   "status": agreed.status, "by_language": agreed.by_language, "differing": agreed.differing}
            if changed is not None:
                change = changed[q.doc_id]
                row.update(changed_lang=change.lang, old=change.old, new=change.new,
                           reachable=change.lang in agreed.by_language or change.lang in (found[0].also_in if found else []),
                           detected=agreed.status == "disagree" and change.lang in agreed.differing)
            rows.append(row)
    return rows


def summary(rows: list[dict]) -> dict:
    changed = [r for r in rows if r["set"] == "changed"]
    unchanged = [r for r in rows if r["set"] == "unchanged"]

    def share(rs, test):
        return round(sum(1 for r in rs if test(r)) / len(rs), 4) if rs else None

    reachable = [r for r in changed if r["reachable"]]
    return {
        "changed": {"n": len(changed), "detected": share(changed, lambda r: r["detected"]),
                    "changed_version_in_evidence": share(changed, lambda r: r["reachable"]),
                    "detected_when_in_evidence": share(reachable, lambda r: r["detected"]),
                    "support_found": share(changed, lambda r: r["support"] is not None)},
        "unchanged": {"n": len(unchanged), "disagree": share(unchanged, lambda r: r["status"] == "disagree"),
                      "agree": share(unchanged, lambda r: r["status"] == "agree"),
                      "support_found": share(unchanged, lambda r: r["support"] is not None),
                      "support_gold": share(unchanged, lambda r: r["support_gold"])},
    }


def main(argv=None) -> int:
    from crosearch_agent import qa_data
    from crosearch_agent.changed_numbers import changes

    parser = argparse.ArgumentParser(prog="python -m crosearch_agent.eval_agreement", description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=20, help="unchanged xquad-partial test questions per language")
    parser.add_argument("--out", default=None, help="output folder (default: <data home>/eval/agreement)")
    Settings.add_arguments(parser, only=["embedder", "k", "data_dir"])
    args = parser.parse_args(argv)
    settings = Settings.from_args(args)
    folder = args.data_dir or default_data_dir()
    out = Path(args.out or data_home() / "eval" / "agreement")
    out.mkdir(parents=True, exist_ok=True)

    changed = {c.doc_id: c for c in changes(folder)}
    wanted = {c.question_id: c for c in changed.values()}
    asked = [q for q in qa_data.xquad_questions(qa_data.XQUAD_LANGS, "test", folder)
             if q.id in wanted and q.lang != wanted[q.id].lang and q.answers]
    rows = _run(dataclasses.replace(settings, collection="xquad-changed"), asked, "changed", changed)
    from crosearch_agent.eval import qa_questions

    unchanged = [q for q in qa_questions("xquad", "test", None, args.limit, folder) if q.answers]
    rows += _run(dataclasses.replace(settings, collection="xquad-partial"), unchanged, "unchanged")

    results = summary(rows)
    with open(out / "rows.jsonl", "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    (out / "results.json").write_text(json.dumps({"config": {"limit": args.limit, "k": settings.k,
                                                             "embedder": settings.embedder},
                                                  "results": results}, indent=2))
    c, u = results["changed"], results["unchanged"]
    md = (f"| set | n | detected / disagree | changed version in evidence | detected when in evidence | support found |\n"
          f"|---|---|---|---|---|---|\n"
          f"| changed (xquad-changed) | {c['n']} | {c['detected']} | {c['changed_version_in_evidence']} | "
          f"{c['detected_when_in_evidence']} | {c['support_found']} |\n"
          f"| unchanged (xquad-partial test) | {u['n']} | {u['disagree']} | – | – | {u['support_found']} |\n")
    (out / "results.md").write_text(md)
    print(md)
    print(f"wrote {out}/results.json, results.md, rows.jsonl")
    return 0


if __name__ == "__main__":
    sys.exit(main())
