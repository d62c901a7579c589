"""The policy backends agree: the same greedy tokens for the same prompts (the first 32),
stop strings reported the same way, a sampling kept to some scripts on each (prompt by prompt),
and the agent runs on each.

The comparison runs in float32: in bf16 the two backends' kernels round differently and one
of these prompts drifts at token 22 (measured), which says nothing about the backends' logic.

vLLM starts an engine (~1 min, a few GB of RAM on CPU), so one engine serves the module and
the OpenAI-compatible server is started once, as a real subprocess."""
import os
import socket
import subprocess
import sys
import time

import pytest

from crosearch_agent.config import data_home
from crosearch_agent.policy import PolicyError, Sampling, vllm_available

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not vllm_available(), reason="vLLM is not installed (make setup installs it)")]

PROMPTS = [
    "The capital of France is",
    "Question: Wer schrieb den Faust?\n<think>",
    "1, 2, 3, 4, 5,",
    "日本の首都は",
]
GREEDY = Sampling(max_tokens=32, temperature=0.0)
DTYPE = "float32"


@pytest.fixture(scope="module")
def model():
    from crosearch_agent.policy_folders import resolve_policy

    return resolve_policy("bundled:gemma-3-270m")


@pytest.fixture(scope="module")
def reference_policy(model):
    from crosearch_agent.policy import TransformersPolicy

    return TransformersPolicy(model, dtype=DTYPE)


@pytest.fixture(scope="module")
def reference(reference_policy):
    return reference_policy.generate(PROMPTS, GREEDY)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(model):
    """`python -m vllm.entrypoints.openai.api_server` on a free port, as users would run it."""
    port = _free_port()
    data_home().mkdir(parents=True, exist_ok=True)
    log = open(data_home() / "vllm_server_test.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model, "--host", "127.0.0.1",
         "--port", str(port), "--dtype", DTYPE, "--enforce-eager", "--max-model-len", "4096",
         "--kv-cache-memory-bytes", str(2**30), "--served-model-name", "crosearch-policy"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "2"})
    base = f"http://127.0.0.1:{port}/v1"
    from crosearch_agent.policy import OpenAIPolicy

    deadline = time.time() + 400
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the vLLM server exited with code {proc.returncode} (see {data_home() / 'vllm_server_test.log'})")
        try:
            OpenAIPolicy(base, timeout=5)
            break
        except PolicyError:
            time.sleep(3)
    else:
        proc.kill()
        pytest.fail("the vLLM server did not come up in 400 s")
    yield base, proc
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_openai_server_gives_the_same_greedy_tokens_as_transformers(server, reference):
    from crosearch_agent.policy import OpenAIPolicy

    policy = OpenAIPolicy(server[0])
    assert policy.name == "crosearch-policy"
    got = policy.generate(PROMPTS, GREEDY)
    for ours, ref in zip(got, reference):
        assert ours.text == ref.text, (ours.text, ref.text)


def test_openai_backend_reports_the_stop_string(server):
    from crosearch_agent.policy import OpenAIPolicy

    gen = OpenAIPolicy(server[0]).generate(["1, 2, 3, 4, 5,"], Sampling(max_tokens=32, stop=(" 8",)))[0]
    assert gen.stop == " 8" and gen.finish_reason == "stop" and gen.text.strip().startswith("6")


# The base model continues this in Greek (" Denver Broncos κέρδισαν το ..."); kept to Latin
# letters it answers " Denver Broncos." and goes on in digits.
GREEK_PROMPT = "Οι Denver Broncos κέρδισαν το Super Bowl 50. Ποιος κέρδισε το Super Bowl 50; Απάντηση: Οι"
FREE_AND_LATIN = [GREEDY, Sampling(max_tokens=16, scripts=frozenset({"LATIN"}), closing="</answer>")]


def _check_kept_to_latin(free, latin) -> None:
    from crosearch_agent.token_scripts import text_fits

    assert not text_fits(free.text, frozenset({"LATIN"}))
    assert text_fits(latin.text, frozenset({"LATIN"})) and latin.text.startswith(" Denver Broncos"), latin.text


def test_transformers_keeps_a_sampling_to_its_scripts_prompt_by_prompt(reference_policy):
    _check_kept_to_latin(*reference_policy.generate([GREEK_PROMPT] * 2, FREE_AND_LATIN))


def test_the_openai_backend_keeps_a_sampling_to_its_scripts(server):
    from crosearch_agent.policy import OpenAIPolicy

    _check_kept_to_latin(*OpenAIPolicy(server[0]).generate([GREEK_PROMPT] * 2, FREE_AND_LATIN))


def test_a_stopped_server_gives_a_policy_error_that_says_so(server):
    from crosearch_agent.policy import OpenAIPolicy

    policy = OpenAIPolicy(server[0])
    server[1].terminate()
    server[1].wait(60)
    with pytest.raises(PolicyError, match="not reachable"):
        policy.generate(["hello"], GREEDY)


@pytest.fixture(scope="module")
def engine(model):
    from crosearch_agent.policy import VLLMPolicy

    policy = VLLMPolicy(model, dtype=DTYPE)
    yield policy
    policy.close()


def test_vllm_engine_gives_the_same_greedy_tokens_as_transformers(engine, reference):
    got = engine.generate(PROMPTS, GREEDY)
    for ours, ref in zip(got, reference):
        assert ours.token_ids[:32] == ref.token_ids[:32], (ours.text, ref.text)
        assert ours.tokens == len(ours.token_ids) <= 32


def test_vllm_engine_keeps_a_sampling_to_its_scripts(engine):
    _check_kept_to_latin(*engine.generate([GREEK_PROMPT] * 2, FREE_AND_LATIN))


def test_vllm_engine_cuts_at_the_stop_string_and_says_which(engine):
    from crosearch_agent import prompts

    gen = engine.generate(["1, 2, 3, 4, 5,"], Sampling(max_tokens=32, stop=(" 8", prompts.STOP_SEARCH)))[0]
    assert gen.stop == " 8" and " 8" not in gen.text and gen.finish_reason == "stop"


def test_ask_answers_through_the_vllm_engine(engine, shared_data):
    """The agent loop on the in-process engine, over the real default collection."""
    from crosearch_agent.agent import Agent
    from crosearch_agent.config import Settings
    from crosearch_agent.eval import ensure_index
    from crosearch_agent.retriever import load_retriever

    settings = Settings(few_shot=1, max_new_tokens=32)
    ensure_index(settings)
    result = Agent(engine, load_retriever(settings), settings).answer("Wer gewann den Super Bowl 50?")
    assert result.error is None and result.answer is not None and result.lang == "de"
    assert {l for s in result.searches for l in s.languages} > {"de"}
