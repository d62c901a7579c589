"""The training report compares evals of different policies and GRPO runs side by side, and
names any eval option that differs besides the policy."""
import json

from training.logs import read_rows, write_rows
from training.report import main


def _eval(folder, policy, f1, k=2):
    s = {"n": 2, "f1": f1, "valid": 1.0}
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps({
        "config": {"policy": policy, "k": k, "split": "dev", "date": "x"},
        "results": {"crosearch": {"overall": s, "subsets": {"local": s, "cross": s}, "by_language": {"de": s}}}}))
    return folder


def test_the_report_puts_policies_and_runs_side_by_side(tmp_path):
    base = _eval(tmp_path / "base", "bundled", 0.125)
    grpo = _eval(tmp_path / "grpo", "ckpt", 0.375)
    run = tmp_path / "run"
    run.mkdir()
    write_rows(run / "log.csv", [{"step": i, "reward": 0.1 * i, "kl": 0.01, "step_s": 10} for i in range(1, 5)])
    out = tmp_path / "out"
    assert main(["--eval", f"base={base}", "--eval", f"grpo={grpo}", "--run", f"multi={run}", "--out", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert "| base | all | 2 |" in report and "0.125" in report and "0.375" in report
    assert "| multi | 4 | 0.100 → 0.400 |" in report
    assert "differ" not in report
    assert (out / "eval_f1.png").stat().st_size > 0 and (out / "grpo_curves.png").stat().st_size > 0
    assert json.loads((out / "evals.json").read_text())["grpo"]["results"]["overall"]["f1"] == 0.375


def test_an_eval_of_the_default_policy_is_named_by_the_folder_it_served(tmp_path):
    default = _eval(tmp_path / "default", None, 0.25)
    results = json.loads((default / "results.json").read_text())
    results["config"]["timing"] = {"policy": "<data home>/models/crosearch-reader-270m"}
    (default / "results.json").write_text(json.dumps(results))
    main(["--eval", f"shipped={default}", "--out", str(tmp_path / "out")])
    assert "shipped = `default: <data home>/models/crosearch-reader-270m`" in (tmp_path / "out" / "report.md").read_text()


def test_machine_folders_are_named_by_role(tmp_path, monkeypatch):
    from crosearch_agent.config import portable

    monkeypatch.setenv("CROSEARCH_HOME", str(tmp_path / "home"))
    got = portable({"policy": str(tmp_path / "home" / "checkpoints" / "latest"), "n": [3, str(tmp_path)]})
    assert got == {"policy": "<data home>/checkpoints/latest", "n": [3, str(tmp_path)]}


def test_evals_with_other_options_are_flagged(tmp_path):
    a = _eval(tmp_path / "a", "p1", 0.1, k=2)
    b = _eval(tmp_path / "b", "p2", 0.2, k=5)
    main(["--eval", f"a={a}", "--eval", f"b={b}", "--out", str(tmp_path / "out")])
    assert "- k: a=2, b=5" in (tmp_path / "out" / "report.md").read_text()


def test_a_resumed_runs_clock_goes_on_from_its_checkpoints_step(tmp_path):
    from training.logs import StepLogger

    write_rows(tmp_path / "log.csv", [{"step": i, "time_s": 90.0 * i, "reward": 0.5} for i in range(1, 5)])
    resumed = StepLogger(tmp_path, stats=None, resume_step=2)  # steps 3 and 4 are trained again
    assert [int(r["step"]) for r in resumed.rows] == [1, 2] and resumed.elapsed == 180.0
    assert StepLogger(tmp_path, stats=None).elapsed == 0.0  # a fresh run


def test_each_step_logs_memory_now_and_at_its_peak(tmp_path):
    from types import SimpleNamespace

    from training.logs import StepLogger
    from training.rollout import RolloutStats

    logger = StepLogger(tmp_path, RolloutStats())
    logger.on_log(None, SimpleNamespace(global_step=1, is_world_process_zero=True), None, logs={"reward": 0.5})
    row = read_rows(tmp_path / "log.csv")[0]
    assert 50 < float(row["rss_mb"]) <= float(row["peak_rss_mb"])  # this process holds torch: tens of MB at least
