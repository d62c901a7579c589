"""Language detection: restricted to indexed languages, honest about short or mixed input."""
import pytest

from crosearch_agent import qa_data
from crosearch_agent.languages import XQUAD_LANGS, detect


@pytest.mark.parametrize("method,min_accuracy", [("py3langid", 0.98), ("langdetect", 0.85)])
def test_short_questions_in_all_12_xquad_languages_are_identified(shared_data, method, min_accuracy):
    questions = [q for lang in XQUAD_LANGS for q in qa_data.xquad_questions([lang], "dev")[:20]]
    correct = {lang: 0 for lang in XQUAD_LANGS}
    for q in questions:
        correct[q.lang] += detect(q.question, XQUAD_LANGS, method).lang == q.lang
    accuracy = sum(correct.values()) / len(questions)
    assert accuracy >= min_accuracy, f"{method}: {accuracy:.3f} {correct}"


def test_detection_is_restricted_to_the_candidates():
    d = detect("Wie viele Punkte hat die Verteidigung zugelassen?", ["de", "en"])
    assert d.lang == "de" and d.confidence > 0.9 and not d.fallback
    assert detect("Wie viele Punkte hat die Verteidigung zugelassen?", ["en", "zh"]).lang in {"en", "zh"}


@pytest.mark.parametrize("text", ["ok", "?", "   ", "42", "🙂"])
def test_very_short_input_falls_back_to_all_languages_and_says_so(text):
    d = detect(text, XQUAD_LANGS)
    assert d.fallback and "all languages" in d.reason


def test_mixed_input_falls_back():
    d = detect("Berlin Hauptstadt capital city", ["de", "en"])
    assert d.fallback and "mixed" in d.reason


def test_langdetect_is_deterministic():
    text = "Qual é a capital da Espanha e quantos habitantes tem?"
    assert len({detect(text, ["es", "en", "ro"], "langdetect") for _ in range(5)}) == 1


def test_unknown_method_and_empty_candidates_are_clear_errors():
    with pytest.raises(ValueError, match="unknown language detector"):
        detect("hello there", ["en"], "nope")
    with pytest.raises(ValueError, match="candidate"):
        detect("hello there", [])
