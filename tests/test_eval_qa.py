"""`python -m crosearch_agent.eval --task qa`: one command from data to the EVAL.md JSON,
Markdown table and chart, on XQuAD (parallel, local/cross subsets) and on TyDi-format files."""
import json

import pytest

from crosearch_agent import eval as evaluation
from crosearch_agent.config import REPO_ROOT
from crosearch_agent.eval import QA_KEYS

pytestmark = pytest.mark.slow

SMALL = ["--backend", "transformers", "--few-shot", "1", "--max-new-tokens", "24", "--max-turns", "2"]


def test_qa_eval_writes_every_metric_per_method_subset_and_language(tmp_path, shared_data):
    out = tmp_path / "qa"
    rc = evaluation.main(["--task", "qa", "--split", "dev", "--limit", "2", "--languages", "de", "zh",
                          "--methods", "closed_book,mono_rag,concat_rag,crosearch", "--out", str(out), *SMALL])
    assert rc == 0
    data = json.loads((out / "results.json").read_text())
    assert data["config"]["split"] == "dev" and data["config"]["git_commit"]
    # fit to commit: the policy's folder is named by role, not by this machine's path
    assert data["config"]["timing"]["policy"].startswith("<") and str(REPO_ROOT) not in json.dumps(data)
    for method in ("closed_book", "mono_rag", "concat_rag", "crosearch"):
        res = data["results"][method]
        assert res["overall"]["n"] == 4 and set(QA_KEYS) - {"recall"} <= set(res["overall"])
        assert set(res["by_language"]) == {"de", "zh"}
        assert set(res["subsets"]) <= {"local", "cross"} and sum(s["n"] for s in res["subsets"].values()) == 4
        for key in ("em", "f1", "fem", "c3r"):
            assert 0.0 <= res["overall"][key] <= 1.0
    assert data["results"]["closed_book"]["overall"]["searches"] == 0
    assert data["results"]["mono_rag"]["overall"]["searches"] == 1
    assert data["results"]["crosearch"]["overall"]["searches"] >= 1
    # The agent's global search finds the gold paragraph at least as often as the local-only search.
    assert data["results"]["crosearch"]["overall"]["recall"] >= data["results"]["mono_rag"]["overall"]["recall"]
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    assert len(rows) == 16 and {r["query_lang"] for r in rows} == {"de", "zh"}
    assert "| crosearch | all | 4 |" in (out / "results.md").read_text()
    assert (out / "f1.png").stat().st_size > 10_000


def test_tydiqa_format_files_get_their_own_index_and_all_questions_are_local(tmp_path, shared_data, monkeypatch):
    # A "dev" split in TyDi's file format, made from the first articles of the English train file.
    source = json.loads((shared_data / "tydiqa_goldp" / "english_tydiqa_train.json").read_text())
    data_dir = tmp_path / "tydi"
    data_dir.mkdir()
    (data_dir / "english_tydiqa_dev.json").write_text(json.dumps({"data": source["data"][:6]}))
    monkeypatch.setenv("CROSEARCH_HOME", str(tmp_path / "home"))
    out = tmp_path / "qa"
    rc = evaluation.main(["--task", "qa", "--dataset", "tydiqa-goldp", "--data-dir", str(data_dir), "--split", "dev",
                          "--limit", "2", "--methods", "mono_rag", "--out", str(out), *SMALL])
    assert rc == 0
    data = json.loads((out / "results.json").read_text())
    assert data["config"]["collection"] == "tydiqa-goldp:dev"
    res = data["results"]["mono_rag"]
    assert res["overall"]["n"] == 2 and list(res["subsets"]) == ["local"] and res["overall"]["recall"] > 0
    assert (tmp_path / "home" / "indexes" / "tydiqa-goldp:dev" / "manifest.json").exists()


def test_unknown_method_and_missing_data_fail_with_a_message(tmp_path, capsys):
    assert evaluation.main(["--task", "qa", "--methods", "psychic", "--out", str(tmp_path), *SMALL]) == 1
    assert "unknown QA method" in capsys.readouterr().err
    assert evaluation.main(["--task", "qa", "--dataset", "tydiqa-goldp", "--data-dir", str(tmp_path),
                            "--split", "dev", "--out", str(tmp_path), *SMALL]) == 1
    assert "TyDi QA GoldP (dev)" in capsys.readouterr().err
