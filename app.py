"""CroSearch chat app: `python app.py` (placeholder until the app issue lands).

For now it checks what the app will need and says what is ready and what is missing.
"""
import sys

from crosearch_agent.config import data_home
from crosearch_agent.store import StoreError, collection_dir, load_collection


def main() -> int:
    print("CroSearch: the chat app is not built yet (see the open app issue).")
    print(f"data home: {data_home()}")
    try:
        col = load_collection(collection_dir("xquad-partial"), verify=False)
        print(f"index 'xquad-partial': ready, {col.manifest['passages']} passages in {len(col.languages)} languages")
    except StoreError as err:
        print(f"index 'xquad-partial': missing ({err})")
    print('Try retrieval now:  .venv/bin/python -m crosearch_agent.eval --task retrieval --collection xquad-partial --split test')
    return 0


if __name__ == "__main__":
    sys.exit(main())
