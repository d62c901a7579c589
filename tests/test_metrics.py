"""QA metrics: EVAL.md's normalisation, EM, F1, fEM, c3R, EM-any and answer language."""
import pytest

from crosearch_agent import metrics
from crosearch_agent.metrics import c3r, em, em_any, f1, fem, mean_scores, normalize, score_answer, tokens


def test_english_articles_and_punctuation_do_not_count():
    assert normalize("The Panthers!", "en") == "panthers"
    assert em("The Panthers!", ["panthers"], "en") == 1.0
    assert em("An apple, a day", ["apple day"], "en") == 1.0


def test_articles_are_only_dropped_in_english():
    assert normalize("a Roma", "es") == "a roma"
    assert em("Roma", ["a Roma"], "es") == 0.0
    assert normalize("The", "de") == "the"


def test_articles_inside_words_are_kept():
    assert normalize("Theatre and Anthem", "en") == "theatre and anthem"


def test_punctuation_of_every_script_becomes_space():
    assert normalize("«Hola», dijo—¿sí?", "es") == "hola dijo sí"
    assert normalize("北京。上海、广州", "zh") == "北京 上海 广州"
    assert normalize("Denver Broncos’", "en") == "denver broncos"


def test_nfkc_makes_full_width_digits_and_ligatures_equal():
    assert normalize("１９９８", "en") == "1998"
    assert em("１９９８", ["1998"], "zh") == 1.0
    assert normalize("ﬁnal", "en") == "final"


def test_casefold_handles_german_sharp_s():
    assert em("STRASSE", ["Straße"], "de") == 1.0


def test_whitespace_is_collapsed():
    assert normalize("  New \n York\t", "en") == "new york"


def test_character_languages_count_each_character_as_a_token():
    assert tokens("北京 市", "zh") == ["北", "京", "市"]
    assert tokens("東京都", "ja") == ["東", "京", "都"]
    assert tokens("กรุงเทพ", "th") == list("กรุงเทพ")
    assert tokens("New York City", "de") == ["new", "york", "city"]


def test_f1_in_chinese_counts_characters():
    # precision 2/3, recall 1 -> 2 * (2/3 * 1) / (2/3 + 1) = 0.8
    assert f1("北京市", ["北京"], "zh") == pytest.approx(0.8)


def test_em_ignores_spaces_in_character_languages():
    assert em("北京 市", ["北京市"], "zh") == 1.0
    assert em("北京 市", ["北京市"], "en") == 0.0


def test_f1_partial_overlap_by_hand():
    # pred tokens: denver broncos team (3); gold: denver broncos (2); overlap 2
    # precision 2/3, recall 2/2 -> 2 * (2/3) / (2/3 + 1) = 0.8
    assert f1("the Denver Broncos team", ["Denver Broncos"], "en") == pytest.approx(0.8)
    # punctuation becomes a space, so "Levi's" is two tokens: gold = levi s stadium santa
    # clara california (6); pred santa clara (2); overlap 2 -> precision 1, recall 1/3 -> 0.5
    assert f1("Santa Clara", ["Levi's Stadium, Santa Clara, California"], "en") == pytest.approx(0.5)


def test_f1_counts_repeated_tokens_as_a_bag():
    # pred: new new york (3), gold: new york (2): overlap min-counts = new 1 + york 1 = 2
    assert f1("new new york", ["new york"], "en") == pytest.approx(2 * (2 / 3) / (2 / 3 + 1))


def test_f1_takes_the_best_gold():
    assert f1("Broncos", ["Carolina Panthers", "Denver Broncos"], "en") == pytest.approx(2 * 0.5 / 1.5)


def test_flexible_em_accepts_the_gold_inside_a_longer_answer():
    assert fem("It was the Denver Broncos in 2016.", ["Denver Broncos"], "en") == 1.0
    assert fem("Denver", ["Denver Broncos"], "en") == 0.0
    assert em("It was the Denver Broncos in 2016.", ["Denver Broncos"], "en") == 0.0


def test_flexible_em_never_matches_an_empty_gold():
    assert fem("anything", ["", "  ", "."], "en") == 0.0
    assert fem("anything", ["the"], "en") == 0.0


def test_c3r_by_hand():
    # gold "paris" -> par ari ris (3 grams); pred "parisian" has all three -> 1.0
    assert c3r("Parisian", ["Paris"], "en") == 1.0
    # gold "berlin" -> ber erl rli lin; pred "berlinn" has all 4; pred "bern" only "ber" -> 1/4
    assert c3r("Bern", ["Berlin"], "de") == pytest.approx(0.25)


def test_c3r_ignores_spaces_and_segmentation():
    assert c3r("NewYork", ["New York"], "en") == 1.0
    # gold 北京大学 -> 北京大 京大学; pred 北京 大学城 (spaces removed: 北京大学城) has both
    assert c3r("北京 大学城", ["北京大学"], "zh") == 1.0


def test_c3r_counts_gold_grams_with_multiplicity():
    # gold "aaaa" -> aaa x2; pred "aaa" has aaa once -> 1/2
    assert c3r("aaa", ["aaaa"], "de") == pytest.approx(0.5)


def test_c3r_falls_back_to_substring_for_golds_under_three_characters():
    assert c3r("in 北京市", ["北京"], "zh") == 1.0
    assert c3r("上海", ["北京"], "zh") == 0.0
    assert c3r("Route 66 east", ["66"], "en") == 1.0


def test_em_any_finds_the_fact_in_another_languages_gold():
    golds = {"de": ["Denver Broncos"], "zh": ["丹佛野马队"], "en": ["The Denver Broncos"]}
    assert em_any("丹佛野马队", golds) == 1.0
    assert em("丹佛野马队", golds["de"], "de") == 0.0
    assert em_any("Denver Broncos", {"en": ["The Denver Broncos"]}) == 1.0
    assert em_any("Paris", golds) == 0.0


def test_empty_prediction_scores_zero():
    scores = score_answer("", ["Denver Broncos"], "en", {"en": ["Denver Broncos"], "de": ["Denver Broncos"]})
    assert scores == {"em": 0.0, "f1": 0.0, "fem": 0.0, "c3r": 0.0, "em_any": 0.0, "lang": None}
    assert score_answer(None, ["x"], "en")["em"] == 0.0


def test_score_answer_has_every_metric_key():
    scores = score_answer("Denver Broncos", ["Denver Broncos"], "en")
    assert tuple(scores) == metrics.METRIC_KEYS
    assert scores["em"] == scores["f1"] == scores["fem"] == scores["c3r"] == 1.0
    assert scores["em_any"] is None  # no parallel golds given


def test_score_answer_without_usable_gold_is_not_scored():
    scores = score_answer("anything", [], "en")
    assert scores["em"] is None and scores["f1"] is None and scores["c3r"] is None


def test_mean_scores_skips_none_and_counts():
    means = mean_scores([
        {"em": 1.0, "f1": 1.0, "lang": None, "em_any": None},
        {"em": 0.0, "f1": 0.5, "lang": 1.0, "em_any": None},
    ])
    assert means["n"] == 2
    assert means["em"] == 0.5 and means["f1"] == 0.75
    assert means["lang"] == 1.0 and means["n_lang"] == 1
    assert means["em_any"] is None
    assert "n_em" not in means


def test_mean_scores_of_nothing_is_just_a_zero_count():
    assert mean_scores([]) == {"n": 0}
