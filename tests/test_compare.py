"""Paired comparison of evals: the same questions, B - A, its standard error (also with a
question's translations as one unit), and how many questions moved."""
import json

import pytest

from crosearch_agent.compare import compare_methods, compare_runs, main, paired


def _row(method, qid, lang, subset, f1):
    return {"method": method, "id": qid, "query_lang": lang, "subset": subset, "f1": f1}


def test_a_paired_difference_counts_only_shared_questions_and_its_moves():
    a = {("q1", "de"): ("cross", 0.0), ("q2", "de"): ("cross", 1.0), ("q3", "en"): ("local", 0.5), ("q4", "en"): ("local", 1.0)}
    b = {("q1", "de"): ("cross", 1.0), ("q2", "de"): ("cross", 1.0), ("q3", "en"): ("local", 0.0)}  # q4 unanswered
    every = paired(a, b, "crosearch", "all")
    assert (every.n, every.better, every.worse) == (3, 1, 1)
    assert every.mean_a == pytest.approx(0.5) and every.mean_b == pytest.approx(2 / 3)
    assert every.diff == pytest.approx(1 / 6)
    # differences 1, 0, -0.5: sample variance 0.5833, over n = 3
    assert every.stderr == pytest.approx((0.58333 / 3) ** 0.5, rel=1e-3)
    cross = paired(a, b, "crosearch", "cross")
    assert (cross.n, cross.diff, cross.stderr) == (2, 0.5, 0.5)
    assert paired(a, {}, "crosearch", "all") is None


def test_translations_of_one_question_that_move_together_count_as_one_question():
    a = {("q1", "de"): ("cross", 0.0), ("q1", "en"): ("cross", 0.0), ("q2", "de"): ("cross", 1.0), ("q2", "en"): ("cross", 1.0)}
    b = {("q1", "de"): ("cross", 1.0), ("q1", "en"): ("cross", 1.0), ("q2", "de"): ("cross", 1.0), ("q2", "en"): ("cross", 1.0)}
    moved = paired(a, b, "crosearch", "all")
    # differences 1, 1, 0, 0: as 4 answers +-0.289; as 2 questions (residual sums +1, -1) +-0.5
    assert moved.stderr == pytest.approx((1 / 3 / 4) ** 0.5)
    assert (moved.questions, moved.stderr_together) == (2, pytest.approx(0.5))
    # one answer per question: the same as the plain standard error
    single = {k: v for k, v in a.items() if k[1] == "de"}
    alone = paired({**single, ("q3", "de"): ("cross", 0.5)}, b | {("q3", "de"): ("cross", 0.0)}, "crosearch", "all")
    assert alone.questions == 3 and alone.stderr_together == pytest.approx(alone.stderr)


def test_two_runs_and_two_methods_of_one_run():
    run_a = [_row("crosearch", "q1", "de", "cross", 0.0), _row("concat_rag", "q1", "de", "cross", 1.0)]
    run_b = [_row("crosearch", "q1", "de", "cross", 1.0), _row("oracle", "q1", "de", "cross", 1.0)]
    assert [(p.method, p.subset, p.diff) for p in compare_runs(run_a, run_b)] == [("crosearch", "all", 1.0),
                                                                                   ("crosearch", "cross", 1.0)]
    assert [(p.method, p.diff) for p in compare_methods(run_a, "concat_rag")] == [("crosearch", -1.0)] * 2
    with pytest.raises(ValueError, match="no rows of method 'mono_rag'"):
        compare_methods(run_a, "mono_rag")


def test_the_command_prints_a_table_or_says_what_is_missing(tmp_path, capsys):
    folder = tmp_path / "eval"
    folder.mkdir()
    rows = [_row("crosearch", "q1", "de", "cross", 0.5), _row("concat_rag", "q1", "de", "cross", 0.0)]
    (folder / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main([str(folder), "--against", "concat_rag"]) == 0
    assert "| crosearch | cross | 1 | 0.000 | 0.500 | +0.500 +- 0.000 | +- 0.000 (1) | 1 / 0 |" in capsys.readouterr().out
    assert main([str(tmp_path / "nowhere"), str(folder)]) == 1
    assert "no eval rows at" in capsys.readouterr().err
