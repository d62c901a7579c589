"""How often the two forced searches (local, then every language) show the gold paragraph with k
items each, k = 1, 2, 3: `PYTHONPATH=. python gold_shown.py dev|test` from the repository root."""
import sys, collections
from crosearch_agent.config import Settings
from crosearch_agent.retriever import load_retriever
from crosearch_agent import qa_data
from crosearch_agent.eval import spread

split = sys.argv[1]
r = load_retriever(Settings())
langs = r.languages
qs = [q for l in langs for q in spread(qa_data.xquad_questions([l], split), 30)]
local_docs = {l: r.doc_ids(l) for l in langs}
stats = collections.defaultdict(collections.Counter)
for q in qs:
    sub = "local" if q.doc_id in local_docs[q.lang] else "cross"
    first = r.search(q.question, [q.lang], 3, query_lang=q.lang)
    second = r.search(q.question, [q.lang] + [l for l in langs if l != q.lang], 3, query_lang=q.lang)
    gold = lambda items: [e.shown(q.lang).passage.doc_id == q.doc_id for e in items]
    for k in (1, 2, 3):
        s = stats[(sub, k)]
        s["n"] += 1
        s["first"] += any(gold(first[:k]))
        s["second"] += any(gold(second[:k]))
        s["either"] += any(gold(first[:k] + second[:k]))
for key, s in sorted(stats.items()):
    n = s["n"]
    print(key, n, {k2: round(v / n, 3) for k2, v in s.items() if k2 != "n"})
