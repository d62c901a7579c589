"""How often the agent's two forced searches, k items each, show the gold paragraph, read from a
retrieval eval's rows (`python -m crosearch_agent.eval --task retrieval --methods mono,aligned`):
`mono` is the local search, `aligned` the every-language one, and a rank is that of the item
whose shown version is the gold. Usage: `python shown_ranks.py retrieval/dev-weight-2.0 ...`."""
import json
import sys
from pathlib import Path

for folder in sys.argv[1:]:
    rows = [json.loads(line) for line in (Path(folder) / "rows.jsonl").open()]
    ranks = {}  # (question id, language) -> {method: rank}
    for r in rows:
        ranks.setdefault((r["id"], r["query_lang"], r["subset"]), {})[r["method"]] = r["rank"]
    within = lambda rank, k: rank is not None and rank <= k
    for subset in ("local", "cross"):
        mine = [m for (_, _, s), m in ranks.items() if s == subset]
        second = [sum(within(m["aligned"], k) for m in mine) / len(mine) for k in (1, 2, 3)]
        either = [sum(within(m["mono"], k) or within(m["aligned"], k) for m in mine) / len(mine) for k in (1, 2, 3)]
        print(f"{folder} {subset} (n {len(mine)}): every-language search @1/@2/@3 "
              + " ".join(f"{x:.3f}" for x in second) + "; either search @1/@2/@3 " + " ".join(f"{x:.3f}" for x in either))
