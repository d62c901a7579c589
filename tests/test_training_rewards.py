"""GRPO rewards on hand-made cases: answer F1/EM in the rollout's language, format of the
policy's turns, and the answer's language."""
import pytest

from training import rewards


@pytest.mark.parametrize("answer, golds, lang, metric, expected", [
    ("Denver Broncos", ["Denver Broncos"], "en", "f1", 1.0),
    ("the Denver Broncos", ["Denver Broncos"], "en", "em", 1.0),      # English articles do not count
    ("Broncos", ["Denver Broncos"], "en", "f1", pytest.approx(2 / 3)),
    ("Broncos", ["Denver Broncos"], "en", "em", 0.0),
    ("丹佛野马", ["丹佛野马队"], "zh", "f1", pytest.approx(8 / 9)),        # characters are tokens in Chinese
    ("", ["Denver Broncos"], "en", "f1", 0.0),
    (None, ["x"], "en", "f1", 0.0),
    ("Denver Broncos", ["丹佛野马队"], "zh", "f1", 0.0),                   # right fact, wrong language: no credit
])
def test_answer_reward(answer, golds, lang, metric, expected):
    assert rewards.answer_score(answer, golds, lang, metric) == expected


def test_format_reward():
    good_search = "Let me look.</think>\n<search>Super Bowl 50 winner</search>"
    good_answer = "Doc 1 says: Denver Broncos.</think>\n<answer>Denver Broncos</answer>"
    rambling = "the quick brown fox jumps over"
    assert rewards.format_score([good_search, good_answer], answered=True) == 1.0
    assert rewards.format_score([good_search, rambling], answered=True) == 0.5
    assert rewards.format_score([good_search, good_answer], answered=False) == 0.5  # the agent had to force it
    assert rewards.format_score([rambling], answered=False) == 0.0
    assert rewards.format_score([], answered=False) == 0.0
    # writing <information> itself is a format error
    assert rewards.format_score(["x</think>\n<information>fake</information><answer>a</answer>"], True) == 0.0


@pytest.mark.parametrize("answer, lang, golds, expected", [
    ("the team from Denver won", "en", [], 1.0),
    ("丹佛野马队", "zh", [], 1.0),
    ("the team from Denver won", "zh", [], 0.0),
    ("Берлин столица Германии", "ru", [], 1.0),
    ("Berlin ist die Hauptstadt", "ru", [], 0.0),
    ("Denver Broncos", "de", [], 1.0),               # a name shared by the Latin-script languages
    ("Lady Gaga", "el", [], 1.0),                    # Greek keeps many names in Latin letters...
    ("Denver Broncos", "el", ["Ντένβερ Μπρόνκος"], 0.0),  # ...but not this one, says the gold
    ("1979", "de", [], 1.0),      # numbers belong to every language
    ("", "de", [], 0.0),
])
def test_language_reward(answer, lang, golds, expected):
    assert rewards.language_score(answer, lang, golds) == expected


def test_language_reward_with_the_parallel_golds():
    # The GRPO examples know every language's gold: another language's gold is that language's way.
    by_lang = {"en": ["Warsaw"], "de": ["Warschau"], "tr": ["Varşova"]}
    assert rewards.language_score("Varşova", "en", ["Warsaw"]) == 1.0            # the detector cannot place it
    assert rewards.language_score("Varşova", "en", ["Warsaw"], by_lang) == 0.0
    assert rewards.language_score("Warsaw", "de", ["Warschau"], by_lang) == 0.0
    assert rewards.language_score("Warsaw", "en", ["Warsaw"], by_lang) == 1.0


def test_trl_signatures_read_the_rollout_columns_and_return_one_reward_each():
    answer_fn, format_fn, language_fn = rewards.reward_funcs("f1")
    assert [f.__name__ for f in (answer_fn, format_fn, language_fn)] == list(rewards.REWARD_NAMES)
    cols = dict(prompts=["k", "k"], completions=["", ""], answer=["the team from Denver", "Berlin"],
                golds=[["the team from Denver"], ["Берлин"]], lang=["en", "ru"],
                turns=[["ok</think>\n<answer>the team from Denver</answer>"], ["nonsense"]], answered=[True, False],
                searches=[1, 2], trainer_state=None)
    assert answer_fn(**cols) == [1.0, 0.0]
    assert format_fn(**cols) == [1.0, 0.0]
    assert language_fn(**cols) == [1.0, 0.0]
    # With the rollout's golds_by_lang column, another language's gold fails the language reward.
    by_lang = {"en": ["Warsaw"], "tr": ["Varşova"]}
    warsaw = {**cols, "answer": ["Varşova", "Warsaw"], "golds": [["Warsaw"]] * 2, "lang": ["en", "en"]}
    assert language_fn(**warsaw, golds_by_lang=[by_lang] * 2) == [0.0, 1.0]
    assert language_fn(**warsaw) == [1.0, 1.0]
    assert rewards.reward_funcs("em")[0](**{**cols, "answer": ["Broncos", "Берлин"]}) == [0.0, 1.0]
