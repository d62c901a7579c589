"""vLLM's CPU worker on a machine of few cores computes on every core (vLLM alone keeps one
for its scheduler: half of a 2-core machine), unless the user chose a binding."""
import os

import pytest

from crosearch_agent import policy


@pytest.fixture
def cores(monkeypatch):
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)

    def set_cores(ids):
        monkeypatch.setattr(policy.os, "sched_getaffinity", lambda _pid: set(ids))

    return set_cores


def test_on_two_cores_the_engine_starts_bound_to_both_and_the_environment_is_restored(cores):
    cores([0, 1])
    with policy.cpu_binding(all_cores=True):
        assert os.environ["VLLM_CPU_OMP_THREADS_BIND"] == "0,1"
    assert "VLLM_CPU_OMP_THREADS_BIND" not in os.environ


def test_the_cores_this_process_may_use_are_the_ones_bound(cores):
    cores([5, 3, 4])
    with policy.cpu_binding(all_cores=True):
        assert os.environ["VLLM_CPU_OMP_THREADS_BIND"] == "3,4,5"


def test_a_binding_the_user_set_is_kept(cores, monkeypatch):
    cores([0, 1])
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "nobind")
    with policy.cpu_binding(all_cores=True):
        assert os.environ["VLLM_CPU_OMP_THREADS_BIND"] == "nobind"
    assert os.environ["VLLM_CPU_OMP_THREADS_BIND"] == "nobind"


@pytest.mark.parametrize("ids, all_cores", [(range(policy.FEW_CORES + 1), True), ([0, 1], False)])
def test_many_cores_or_asking_for_vllms_own_binding_leaves_it_to_vllm(cores, ids, all_cores):
    cores(ids)
    with policy.cpu_binding(all_cores=all_cores):
        assert "VLLM_CPU_OMP_THREADS_BIND" not in os.environ
