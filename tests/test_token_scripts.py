"""Answers are decoded in the asker's scripts: a German question gets no Greek letters in its
answer, a Greek one may keep Latin names, and the agent decodes only the answer so."""
from crosearch_agent import prompts
from crosearch_agent.agent import Agent
from crosearch_agent.config import Settings
from crosearch_agent.policy import Generation
from crosearch_agent.token_scripts import LATIN, allowed_token_ids, answer_scripts, text_fits


def test_an_answer_may_use_its_language_s_scripts_and_latin():
    assert answer_scripts("de") == {LATIN}
    assert answer_scripts("el") == {"GREEK", LATIN}
    assert answer_scripts("zh") == {"CJK", LATIN}
    assert answer_scripts("xx") is None  # unknown script: no constraint


def test_text_fits_its_scripts_by_letters_and_script_bound_marks():
    assert not text_fits("Nieu Ίνγκλαντ Πάτριοτς", answer_scripts("de"))
    assert text_fits("Ντένβερ Broncos", answer_scripts("el"))
    assert text_fits("1263, 5½ km (NFL)!", answer_scripts("th"))       # digits, symbols, acronyms
    assert text_fits("Việt Nam, Varşova, Ogród", answer_scripts("vi"))  # Latin letters with diacritics
    assert not text_fits("\u093e", answer_scripts("th"))                # a Devanagari vowel sign alone
    assert text_fits("e\u0301", answer_scripts("de"))                   # a combining accent fits any script


def _ids(tokenizer, text):
    return tokenizer.encode(text, add_special_tokens=False)


def test_the_vocabulary_is_cut_to_the_scripts_keeping_the_closing_tag_and_the_end(bundled_tokenizer):
    tok = bundled_tokenizer
    german = set(allowed_token_ids(tok, answer_scripts("de"), prompts.STOP_ANSWER))
    greek = set(allowed_token_ids(tok, answer_scripts("el"), prompts.STOP_ANSWER))
    chinese = set(allowed_token_ids(tok, answer_scripts("zh"), prompts.STOP_ANSWER))
    assert not set(_ids(tok, "Ίνγκλαντ Πάτριοτς")) & german
    assert set(_ids(tok, "Ίνγκλαντ Πάτριοτς")) <= greek
    assert set(_ids(tok, "Denver Broncos 1263")) <= german & greek & chinese
    assert set(_ids(tok, "丹佛野马队")) <= chinese and not set(_ids(tok, "丹佛野马队")) & greek
    assert set(_ids(tok, prompts.STOP_ANSWER)) <= german & greek & chinese
    assert tok.eos_token_id in german and tok.convert_tokens_to_ids("<end_of_turn>") in greek
    assert tok.convert_tokens_to_ids("<0xCE>") not in german  # a byte could spell any script
    assert not {tok.convert_tokens_to_ids(t) for t in ("<b>", "</b>", "<td>")} & german  # nor markup
    assert tok.convert_tokens_to_ids("<unused0>") not in chinese and 2 not in chinese  # nor control tokens (<bos>)
    assert 0.5 * len(tok) < len(german) < len(tok)


class _Records:
    """A backend that plays scripted turns, one per call, and records each call's samplings."""
    name, backend = "records", "test"

    def __init__(self, *turns):
        self.turns, self.calls = list(turns), []

    def generate(self, prompts_, sampling):
        samplings = sampling if isinstance(sampling, list) else [sampling] * len(prompts_)
        self.calls.append(list(zip(prompts_, samplings)))
        text, stop, tokens = self.turns.pop(0)
        return [Generation(text, "stop", stop, tokens) for _ in prompts_]


def _agent(backend, **kw):
    from tests.conftest import FixedEvidence

    return Agent(backend, FixedEvidence(), Settings(few_shot=0, max_turns=2, max_new_tokens=64, **kw))


def test_an_answer_in_the_question_language_s_scripts_is_decoded_once_and_kept():
    backend = _Records(("Doc 1 says it.</think>\n<answer>Denver Broncos", prompts.STOP_ANSWER, 12))
    result = _agent(backend).answer("Wer gewann den Super Bowl 50?", "de")
    assert len(backend.calls) == 1 and backend.calls[0][0][1].scripts is None
    assert result.answer == "Denver Broncos" and result.format_valid


def test_an_answer_in_another_script_is_decoded_again_in_the_question_language_s():
    backend = _Records(("Doc 1 (Greek) says it.</think>\n<answer>Nieu Ίνγκλαντ Πάτριοτς", prompts.STOP_ANSWER, 16),
                       ("Doc 1 (Greek) says it.</think>\n", prompts.ANSWER_OPEN, 10),
                       ("New England Patriots", prompts.STOP_ANSWER, 4))
    result = _agent(backend).answer("Wer verlor den Super Bowl XLIX?", "de")
    (prompt, free), = backend.calls[0]
    (again, turn), = backend.calls[1]
    (answer_prompt, answer), = backend.calls[2]
    assert free.scripts is None and again == prompt
    assert prompts.ANSWER_OPEN in turn.stop and turn.scripts is None  # the think is decoded as before
    assert answer_prompt == prompt + "Doc 1 (Greek) says it.</think>\n" + prompts.ANSWER_OPEN
    assert answer.scripts == {LATIN} and answer.stop == (prompts.STOP_ANSWER,) and answer.max_tokens == 64 - 10
    assert result.answer == "New England Patriots" and result.format_valid


def test_a_turn_that_opens_its_answer_again_at_the_token_limit_is_cut_not_continued():
    backend = _Records(("I read it.</think>\n<answer>Ίνγκλαντ", prompts.STOP_ANSWER, 40),
                       ("I read it.</think>\n", prompts.ANSWER_OPEN, 64))
    result = _agent(backend).answer("Wer gewann?", "de")
    assert len(backend.calls) == 2 and result.steps[-1].forced and not result.format_valid


def test_a_prompt_that_opens_the_answer_is_decoded_again_in_its_scripts_at_once():
    backend = _Records(("Σαράντα δύο", prompts.STOP_ANSWER, 3), ("42", prompts.STOP_ANSWER, 1))
    result = Agent(backend, None, Settings(few_shot=0), "closed_book").answer("Сколько будет шесть на семь?", "ru")
    assert backend.calls[0][0][1].scripts is None
    (prompt, sampling), = backend.calls[1]
    assert prompt.endswith(prompts.ANSWER_OPEN) and sampling.scripts == {"CYRILLIC", LATIN}
    assert len(backend.calls) == 2 and result.answer == "42"


def test_without_answer_script_any_answer_is_kept():
    backend = _Records(("Easy.</think>\n<answer>Ίνγκλαντ", prompts.STOP_ANSWER, 5))
    result = _agent(backend, answer_script=False).answer("Wer?", "de")
    assert len(backend.calls) == 1 and result.answer == "Ίνγκλαντ"
