"""The gold paragraph's place in the second (every-language) search for several fusion score weights
(retriever only): `PYTHONPATH=. python fusion_sweep.py dev|test 0.75,1.0,2.0` from the repository root."""
import sys, collections, itertools
import numpy as np
from crosearch_agent.config import Settings
from crosearch_agent.retriever import load_retriever
from crosearch_agent import qa_data
from crosearch_agent.eval import spread

split = sys.argv[1]
r = load_retriever(Settings())
langs = r.languages
qs = [q for l in langs for q in spread(qa_data.xquad_questions([l], split), 30)]
local_docs = {l: r.doc_ids(l) for l in langs}
qvecs = r.embedder.encode_queries([q.question for q in qs], progress=False)
found = {}
for i, q in enumerate(qs):
    found[i] = r.language_hits(qvecs[i:i+1], [q.lang] + [l for l in langs if l != q.lang], r.depth)[0]
for sw, rk in itertools.product([float(x) for x in sys.argv[2].split(",")], [60]):
    r.score_weight, r.rrf_k = sw, rk
    s = collections.defaultdict(collections.Counter)
    for i, q in enumerate(qs):
        sub = "local" if q.doc_id in local_docs[q.lang] else "cross"
        ev = r.fuse(found[i], 2, q.lang)
        g = [e.shown(q.lang).passage.doc_id == q.doc_id for e in ev]
        s[sub]["n"] += 1; s[sub]["r1"] += g[0]; s[sub]["r2"] += any(g)
    print(f"sw {sw} rrf_k {rk}: " + "  ".join(f"{sub} @1 {c['r1']/c['n']:.3f} @2 {c['r2']/c['n']:.3f}" for sub, c in sorted(s.items())), flush=True)
