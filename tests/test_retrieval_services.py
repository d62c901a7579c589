"""Languages spread over several retrieval services (`SpreadRetriever`): the same evidence as
the in-process retriever, and a service that is down costs only its languages, which the
evidence, the agent's step, the app's panels and `/ask` name.

Every service here is the real FastAPI app served by uvicorn on a loopback port (in a thread
of this process). The fast tests put a small synthetic collection behind them, with a
stand-in embedder; the slow one the real xquad-partial (12 languages) and the bundled e5,
three services of 4 languages each."""
import argparse
import socket
import threading
import time

import numpy as np
import pytest

from crosearch_agent import store
from crosearch_agent.config import Settings, parse_services
from crosearch_agent.evidence import EvidenceList, Hit
from crosearch_agent.fusion import LanguageHits
from crosearch_agent.remote import RetrievalServiceError, hits_from_json, hits_to_json
from crosearch_agent.retriever import Retriever, load_retriever
from crosearch_agent.serve_retrieval import create_app
from crosearch_agent.spread import SpreadRetriever
from crosearch_agent.store import Passage, StoreError

DIM = 32
LANGS = ["de", "en", "es", "fr", "ru", "zh"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Loopback:
    """A retrieval service app served by uvicorn on a loopback port, in a thread, until `stop`."""

    def __init__(self, app, port: int | None = None):
        import uvicorn

        self.port = port or _free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    access_log=False))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "the service did not start"
            time.sleep(0.02)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        assert not self.thread.is_alive()


def serve(folder, embedder, langs, collection="synthetic", port=None) -> Loopback:
    """A service holding `langs` of the collection in `folder` (what `--languages` loads)."""
    return Loopback(create_app(Retriever(store.load_collection(folder, languages=langs), embedder), collection), port)


def spread_map(services: dict) -> str:
    """`--retriever-urls` for {url: languages}."""
    return ";".join(f"{','.join(langs)}={url}" for url, langs in services.items())


# ---------------------------------------------------------------- the map of languages to services

def test_the_map_of_languages_to_services_is_parsed_and_checked():
    assert parse_services("de,en,zh=http://a:8100;ar,hi,th=http://b:8100/") == {
        "http://a:8100": ["de", "en", "zh"], "http://b:8100": ["ar", "hi", "th"]}
    assert parse_services(" de=http://a:1  en,DE=http://a:1 ;; zh=https://b ") == {
        "http://a:1": ["de", "en"], "https://b": ["zh"]}
    for bad, message in [("", "no retrieval services"), ("de,en", "not LANGUAGES=URL"), ("=http://a", "not LANGUAGES=URL"),
                         ("de=a:8100", "not an http"), ("xx=http://a", "unknown language code 'xx'"),
                         ("de=http://a;de,en=http://b", "'de' is given to two services")]:
        with pytest.raises(ValueError, match=message):
            parse_services(bad)
    parser = argparse.ArgumentParser()
    Settings.add_arguments(parser)
    args = parser.parse_args(["--retriever-urls", "de,en=http://a:1;zh=http://b:2"])
    assert Settings.from_args(args).retriever_urls == "de,en=http://a:1;zh=http://b:2"
    with pytest.raises(SystemExit):  # a usage error naming the problem, before anything loads
        parser.parse_args(["--retriever-urls", "de=localhost:8100"])
    with pytest.raises(ValueError, match="not both"):
        load_retriever(Settings(retriever_url="http://a:1", retriever_urls="de=http://a:1"))


def test_language_hits_cross_the_wire_exactly():
    p = Passage("x/de/1", "de", "T", "Text </information> 𝔘", "X/1", 1, "x")
    vectors = np.random.default_rng(0).standard_normal((2, 5)).astype(np.float32)
    found = [LanguageHits("de", [Hit(p, 0.123456789, 1, 1.5), Hit(p, -0.5, 2, -0.25)], vectors),
             LanguageHits("en", [], np.zeros((0, 5), np.float32)), LanguageHits("zh", [Hit(p, 0.1, 1)], None)]
    import json

    back = hits_from_json(json.loads(json.dumps(hits_to_json(found))))
    assert [(f.lang, f.hits) for f in back] == [(f.lang, f.hits) for f in found]
    assert back[0].vectors.tobytes() == vectors.tobytes() and back[1].vectors.shape == (0, 5) and back[2].vectors is None


# ---------------------------------------------------------------- a synthetic collection behind real services

class Vectors:
    """Stands in for the embedder: each query text names a fixed query vector."""

    def __init__(self, table: dict[str, np.ndarray]):
        self.table = table

    def encode_queries(self, texts, progress=None):
        return np.stack([self.table[t] for t in texts]).astype(np.float32)


def _unit(v):
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """Six languages holding noisy 'translations' of 30 facts (each language misses some), a
    query per fact, and the in-process retriever over all of it."""
    rng = np.random.default_rng(0)
    facts = _unit(rng.normal(size=(30, DIM)))
    passages, vectors = {}, {}
    for lang in LANGS:
        ids = sorted(rng.choice(30, size=24, replace=False))
        passages[lang] = [Passage(f"{lang}/{i}", lang, f"F{i}", f"fact {i} in {lang}", f"doc/{i}") for i in ids]
        vectors[lang] = _unit(facts[ids] + 0.05 * rng.normal(size=(len(ids), DIM)))
    folder = tmp_path_factory.mktemp("spread") / "synthetic"
    store.write_collection(folder, passages, vectors, embedder_id="vectors", dim=DIM, index_type="flat", inputs_hash="h")
    embedder = Vectors({f"q{i}": _unit(facts[i] + 0.1 * rng.normal(size=DIM)) for i in range(30)})
    return folder, embedder, Retriever(store.load_collection(folder), embedder)


def _three(folder, embedder) -> dict[str, Loopback]:
    """Three services, two languages each, not in sorted order (the client must put the hits
    back in the order asked)."""
    return {",".join(langs): serve(folder, embedder, langs) for langs in (["zh", "de"], ["en", "ru"], ["fr", "es"])}


@pytest.fixture(scope="module")
def three(synthetic):
    services = _three(*synthetic[:2])
    yield services
    for s in services.values():
        s.stop()


def _spread(services: dict[str, Loopback], **kw) -> SpreadRetriever:
    return SpreadRetriever(parse_services(spread_map({s.url: langs.split(",") for langs, s in services.items()})), **kw)


def test_spread_services_give_the_same_evidence_as_the_in_process_retriever(synthetic, three):
    _, _, local = synthetic
    spread = _spread(three)
    assert spread.languages == local.languages == sorted(LANGS) and spread.collection_name == "synthetic"
    for i in range(0, 30, 3):
        q, lang = f"q{i}", LANGS[i % len(LANGS)]
        qvec = local.embedder.encode_queries([q])
        for langs, k in [(None, 5), ([lang] + [l for l in LANGS if l != lang], 5), ([lang], 3),
                         (["ru", "de", "ru", "fr"], 12), (LANGS[::-1], 1)]:
            want = local.search_vectors(qvec, langs, k, lang)[0]
            got = spread.search(q, langs, k, lang)
            assert got == want and got.missing == {}  # same passages, order, scores and alignment groups
        assert spread.concat(q, None, 7) == local.concat_vectors(qvec, None, 7)[0]
    assert any(len(e.members) > 1 for e in spread.search("q0"))  # alignment across services happened
    queries = [f"q{i}" for i in range(30)]
    assert spread.search_many(queries, None, 4, "en") == local.search_vectors(local.embedder.encode_queries(queries), None, 4, "en")
    assert spread.doc_ids("ru") == local.doc_ids("ru")
    assert load_retriever(Settings(retriever_urls=spread_map({s.url: l.split(",") for l, s in three.items()}),
                                   languages=["de", "zh"])).languages == ["de", "zh"]
    with pytest.raises(ValueError, match="no index for language"):
        spread.search("q1", ["de", "ar"])
    with pytest.raises(ValueError, match="k must be between"):  # the service's refusal, not an outage
        spread.search("q1", None, 500)


def test_a_stopped_service_costs_only_its_languages(synthetic):
    folder, embedder, local = synthetic
    services = _three(folder, embedder)
    logged = []
    try:
        spread = _spread(services, log=logged.append)
        services["zh,de"].stop()
        gone = {"de": "service unreachable", "zh": "service unreachable"}
        for i in range(0, 30, 5):
            q = f"q{i}"
            got = spread.search(q, ["en", "de", "fr", "zh", "ru"], 5, "en")
            assert got.missing == gone
            # Exactly what the in-process retriever finds in the languages still served.
            assert got == local.search_vectors(embedder.encode_queries([q]), ["en", "fr", "ru"], 5, "en")[0]
            assert all(h.passage.lang not in gone for e in got for h in e.members) and got
        local_only = spread.search("q3", ["de"], 5, "de")
        assert local_only == [] and local_only.missing == {"de": "service unreachable"}
        assert spread.search("q3", ["en"], 5, "en").missing == {}  # a search that needs no stopped service
        assert spread.concat("q3", None, 5).missing == gone
        assert len(logged) == 1 and "unreachable" in logged[0] and "(zh, de) are skipped" in logged[0]
        # Back on its port: its languages are searched again, and the log says so once.
        services["zh,de"] = serve(folder, embedder, ["zh", "de"], port=services["zh,de"].port)
        assert spread.search("q3") == local.search("q3") and spread.search("q3").missing == {}
        assert len(logged) == 2 and "answers again" in logged[1]
    finally:
        for s in services.values():
            if s.thread.is_alive():
                s.stop()


def test_a_service_that_never_answers_costs_its_languages_after_the_timeout(synthetic, three):
    _, embedder, local = synthetic
    with socket.socket() as hung:  # accepts connections (the kernel does) but never replies
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)
        services = {three["en,ru"].url: ["en", "ru"], f"http://127.0.0.1:{hung.getsockname()[1]}": ["de", "zh"]}
        logged = []
        t = time.perf_counter()
        spread = SpreadRetriever(services, timeout=0.5, log=logged.append)  # down from the start: logged, not fatal
        got = spread.search("q4", ["de", "en", "ru", "zh"], 5, "de")
        assert time.perf_counter() - t < 5
    assert got.missing == {"de": "service timed out", "zh": "service timed out"}
    assert got == local.search_vectors(embedder.encode_queries(["q4"]), ["en", "ru"], 5, "de")[0]
    assert len(logged) == 1 and "did not answer within 0.5 s" in logged[0]


def test_services_that_cannot_serve_the_map_are_refused_clearly(synthetic, three):
    folder, embedder, _ = synthetic
    nobody = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(RetrievalServiceError, match="none of the retrieval services answered.*unreachable"):
        SpreadRetriever({nobody: ["de"]})
    with pytest.raises(StoreError, match="none of the retrieval services answered"):  # what the tools report cleanly
        load_retriever(Settings(retriever_urls=f"de={nobody}"))
    with pytest.raises(ValueError, match=f"{three['en,ru'].url} has no index for de .*holds en, ru"):
        SpreadRetriever({three["en,ru"].url: ["en", "de"]})
    other = serve(folder, embedder, ["de"], collection="another")
    try:
        with pytest.raises(ValueError, match="different collections"):
            SpreadRetriever({three["en,ru"].url: ["en"], other.url: ["de"]})
    finally:
        other.stop()
    with pytest.raises(ValueError, match=r"no retrieval service for language\(s\) \['ar'\]"):
        SpreadRetriever({three["en,ru"].url: ["en"]}, ["en", "ar"])


class _Answers:
    """A policy that answers at once (after the agent's forced local and global searches)."""
    name, backend = "answers", "test"

    def generate(self, prompts_, sampling):
        from crosearch_agent import prompts
        from crosearch_agent.policy import Generation

        return [Generation("<think>Found it.</think>\n<answer>fact 4", "stop", prompts.STOP_ANSWER, 1) for _ in prompts_]


def test_the_agent_and_the_app_name_the_languages_not_searched(synthetic):
    import app_views
    from crosearch_agent.agent import Agent, EvidenceStep, describe

    folder, embedder, _ = synthetic
    services = _three(folder, embedder)
    try:
        spread = _spread(services, log=lambda *_: None)
        services["fr,es"].stop()
        result = Agent(_Answers(), spread, Settings(few_shot=0)).answer("q4", lang="en")
    finally:
        for s in services.values():
            if s.thread.is_alive():
                s.stop()
    local, wide = [s for s in result.steps if isinstance(s, EvidenceStep)]
    assert local.missing == {} and wide.missing == {"fr": "service unreachable", "es": "service unreachable"}
    assert result.answer == "fact 4" and wide.items and "fr" not in wide.languages
    note = "Not searched (service unreachable): Spanish, French."  # in the order the search asked for them
    assert note in describe(wide)
    message = app_views.step_message(wide)
    assert note in message.content
    assert "2 not searched" in message.metadata["title"] and "status" not in message.metadata  # left open
    record = app_views.turn_record("q4", result.steps)
    assert [s.get("missing") for s in record["steps"] if s["kind"] == "evidence"] == [{}, wide.missing]
    assert record["summary"]["not_searched"] == {"es": "service unreachable", "fr": "service unreachable"}
    assert "Not searched (service unreachable): Spanish, French." in app_views.summary_markdown(record)
    assert 'class="cs-missing">Not searched (service unreachable): Spanish, French.' in app_views.evidence_html(record)
    # A language missing from one search but found by a later one was searched after all.
    assert app_views.not_searched({"steps": [
        {"kind": "search", "turn": 1, "query": "q", "scope": "global", "languages": ["en", "fr"]},
        {"kind": "evidence", "turn": 1, "items": [], "missing": {"fr": "service timed out"}},
        {"kind": "search", "turn": 2, "query": "q", "scope": "global", "languages": ["en", "fr"]},
        {"kind": "evidence", "turn": 2, "items": [], "missing": {}}]}) == {}
    assert isinstance(spread.search("q1"), EvidenceList)


# ---------------------------------------------------------------- the real collection: 12 languages, 3 services

@pytest.mark.slow
def test_three_services_of_four_languages_give_the_in_process_evidence(shared_data):
    """xquad-partial's 12 languages over three services on loopback (4 each, sharing this
    process's embedder): the evidence of the in-process retriever for local, global and concat
    searches; with one service stopped, the other 8 languages' evidence and the 4 named."""
    from indexes import build

    from crosearch_agent import qa_data

    build.build("xquad-partial", log=lambda *_: None)  # skipped (after a verified load) when up to date
    local = load_retriever(Settings(collection="xquad-partial"))
    langs = local.languages
    assert len(langs) == 12
    groups = [langs[0::3], langs[1::3], langs[2::3]]  # e.g. ar,es,ru,vi | de,hi,th,zh | el,en,ro,tr
    services = [serve(local.collection.folder, local.embedder, g, "xquad-partial") for g in groups]
    try:
        spread = SpreadRetriever({s.url: g for s, g in zip(services, groups)}, log=lambda *_: None)
        questions = [(q.question, lang) for lang in langs for q in qa_data.xquad_questions([lang], "dev")[:1]]
        for question, lang in questions:
            qvec = local.embedder.encode_queries([question], progress=False)
            wide = [lang] + [l for l in langs if l != lang]
            for searched, k in [(wide, 5), ([lang], 5), (wide, 10)]:
                want, got = local.search_vectors(qvec, searched, k, lang)[0], spread.search(question, searched, k, lang)
                assert [e.passage_ids for e in got] == [e.passage_ids for e in want]  # same groups, same order
                assert [e.score for e in got] == pytest.approx([e.score for e in want], rel=1e-6)
                assert got == want and got.missing == {}
            assert spread.concat(question, None, 5) == local.concat_vectors(qvec, None, 5)[0]
        services[1].stop()
        gone = dict.fromkeys(groups[1], "service unreachable")
        for question, lang in questions:
            wide = [lang] + [l for l in langs if l != lang]
            got = spread.search(question, wide, 5, lang)
            assert got.missing == gone and got
            kept = [l for l in wide if l not in gone]
            assert got == local.search(question, kept, 5, lang)
    finally:
        for s in services:
            if s.thread.is_alive():
                s.stop()
