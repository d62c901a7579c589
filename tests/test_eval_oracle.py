"""The reading diagnostic (`--methods oracle`): the gold paragraph is the only evidence, in
the question's language for local questions and in English (German for English questions)
for cross-lingual ones, shown through the same protocol and answer turn as `crosearch`."""
from crosearch_agent import qa_data
from crosearch_agent.agent import Agent
from crosearch_agent.config import Settings
from crosearch_agent.eval import OracleRetriever, oracle_evidence
from crosearch_agent.policy import Generation


class ReadsDocOne:
    """A stand-in policy that answers with the first words of what it was shown."""
    name, backend = "reads-doc-one", "test"

    def __init__(self):
        self.prompts = []

    def generate(self, prompts, sampling):
        self.prompts += prompts
        return [Generation("Doc 1 says it.</think>\n<answer>seen", "stop", "</answer>") for _ in prompts]


def _question(lang: str, qid: str, shared_data):
    return next(q for q in qa_data.xquad_questions([lang], "dev", shared_data) if q.id == qid)


def test_local_questions_read_their_own_paragraph_cross_ones_english_or_german(shared_data):
    de = qa_data.xquad_questions(["de"], "dev", shared_data)[0]
    en, zh = _question("en", de.id, shared_data), _question("zh", de.id, shared_data)
    local_docs = {"de": {de.doc_id}, "en": set(), "zh": set()}  # de holds the paragraph, en and zh do not
    evidence = oracle_evidence([de, en, zh], local_docs, shared_data)
    shown = {q.lang: evidence[(q.question.strip(), q.lang)][0].members[0].passage for q in (de, en, zh)}
    assert (shown["de"].lang, shown["en"].lang, shown["zh"].lang) == ("de", "de", "en")
    assert de.answers[0] in shown["de"].text and de.answers[0] in shown["en"].text
    assert _question("en", de.id, shared_data).answers[0] in shown["zh"].text
    assert all(p.doc_id == de.doc_id and len(p.text) <= 610 for p in shown.values())


def test_the_oracle_goes_through_one_search_and_the_answer_turn(shared_data):
    q = qa_data.xquad_questions(["zh"], "dev", shared_data)[0]
    retriever = OracleRetriever(["zh", "en"], oracle_evidence([q], {"zh": set()}, shared_data))
    policy = ReadsDocOne()
    result = Agent(policy, retriever, Settings(few_shot=0), "oracle").run_batch([q.question], ["zh"])[0]
    assert [s.scope for s in result.searches] == ["local"] and len(policy.prompts) == 1
    assert result.answer == "seen" and result.format_valid
    assert "<information>\nDoc 1 [English (en)]" in policy.prompts[0]
    assert q.doc_id in {d for item in result.evidence for d in item.doc_ids}
