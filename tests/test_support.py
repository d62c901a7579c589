"""Support and agreement: which passage an answer came from (the policy's citation, the
answer's words, its numbers in any script's digits, its meaning) and whether the language
versions of that passage say the same numbers."""
from crosearch_agent.agent import AnswerStep, EvidenceStep, Result, ThinkStep
from crosearch_agent.evidence import Evidence, Hit
from crosearch_agent.store import Passage
from crosearch_agent.support import agreement, ascii_digits, find_support, numbers, sentences

EN = "The Office of Western Medicine was founded by the Mongols. It was founded in 1263 in the capital."
DE = "Das Amt für westliche Medizin wurde von den Mongolen gegründet. Es wurde 1263 in der Hauptstadt gegründet."
AR = "أسس المغول مكتب الطب الغربي. تأسس عام ١٢٦٣ في العاصمة."
TH = "สำนักงานการแพทย์ตะวันตกก่อตั้งโดยชาวมองโกล ก่อตั้งเมื่อ พ.ศ. 1806 ในเมืองหลวง"
OTHER = "Kublai Khan moved the capital to Dadu. The city had many gates."


def _passage(lang, text, doc="Yuan/5", chunk=0):
    return Passage(f"xquad/{lang}/{doc}/{chunk}", lang, "Yuan dynasty", text, doc, chunk, "xquad")


def _item(rank, *members):
    """An evidence item of (lang, text, doc) or (lang, text, doc, chunk) members."""
    return Evidence(rank, 1.0 / rank, [Hit(_passage(*m), 0.9, rank) for m in members])


def _result(answer, lang, searches, think=""):
    steps = [EvidenceStep("evidence", items=items, turn=i) for i, items in enumerate(searches, 1)]
    if think:
        steps.append(ThinkStep("think", text=think, turn=len(searches) + 1))
    steps.append(AnswerStep("answer", text=answer, lang=lang))
    return Result("Wann wurde das Amt gegründet?", lang, answer, steps)


def test_digits_of_every_script_read_as_one_number():
    assert ascii_digits("١٢٦٣ १९६३ ๒๕๕๙ ７") == "1263 1963 2559 7"
    assert numbers("1,000 people in 3.5 days; 2016年2月7日") == ["1000", "3.5", "2016", "2", "7"]
    assert numbers("١٬٠٠٠") == ["1000"]
    assert [s for _, s in sentences("One. Two? 三。四！")] == ["One.", "Two?", "三。", "四！"]


def test_the_policys_citation_names_the_supporting_passage_in_another_language():
    local = [_item(1, ("de", OTHER, "Yuan/1"))]
    everywhere = [_item(1, ("de", OTHER, "Yuan/1")), _item(2, ("ar", AR, "Yuan/5"), ("en", EN, "Yuan/5"))]
    result = _result("1263", "de", [local, everywhere], think="Doc 2 (Arabic) says: ١٢٦٣. I answer in German.")
    [s] = find_support(result)
    assert (s.lang, s.doc_id, s.search, s.rank, s.how) == ("ar", "Yuan/5", 2, 2, "citation")
    assert s.quote == "تأسس عام ١٢٦٣ في العاصمة." and AR[s.start:s.start + len(s.quote)] == s.quote
    assert s.also_in == ["en"]


def test_without_a_citation_words_then_numbers_find_the_passage():
    search = [_item(1, ("de", OTHER, "Yuan/1")), _item(2, ("de", DE, "Yuan/5"))]
    [s] = find_support(_result("von den Mongolen", "de", [search]))
    assert (s.how, s.rank, s.quote) == ("verbatim", 2, "Das Amt für westliche Medizin wurde von den Mongolen gegründet.")
    # a Hindi answer in Devanagari digits, an Arabic passage in Arabic-Indic ones
    [s] = find_support(_result("१२६३ में", "hi", [[_item(1, ("ar", AR, "Yuan/5"))]]))
    assert (s.how, s.lang) == ("number", "ar") and "١٢٦٣" in s.quote
    # a citation the cited document does not bear out is not taken at its word
    [s] = find_support(_result("1263", "de", [search], think="Doc 1 says: 1263."))
    assert (s.how, s.rank) == ("verbatim", 2)


def test_a_citation_of_words_the_answer_does_not_come_from_is_not_support():
    search = [_item(1, ("ar", AR, "Yuan/5"))]
    # the quoted sentence is in Doc 1, but the answer is neither in it nor (no embedder) near it
    assert find_support(_result("Hofen", "de", [search], think="Doc 1 (Arabic) says: تأسس عام ١٢٦٣ في العاصمة.")) == []
    [s] = find_support(_result("1263", "de", [search], think="Doc 1 (Arabic) says: تأسس عام ١٢٦٣ في العاصمة."))
    assert s.how == "citation"


def test_an_answer_nothing_supports_has_no_support():
    search = [_item(1, ("de", OTHER, "Yuan/1"))]
    assert find_support(_result("1492", "de", [search])) == []
    assert find_support(_result("", "de", [search])) == []
    assert find_support(_result("1263", "de", [])) == []


def test_versions_that_agree_are_counted_and_a_changed_number_is_a_disagreement():
    versions = [("en", EN, "Yuan/5"), ("de", DE, "Yuan/5"), ("th", TH, "Yuan/5")]
    result = _result("1263", "de", [[_item(1, *versions)]])
    [s] = find_support(result)
    agreed = agreement(s, result)
    assert agreed.status == "agree" and set(agreed.by_language) == {"en", "de", "th"}  # th: Buddhist era 1806

    changed = AR.replace("١٢٦٣", "١٢٦٦")
    result = _result("1263", "de", [[_item(1, *versions, ("ar", changed, "Yuan/5"))]])
    [s] = find_support(result)
    found = agreement(s, result)
    assert found.status == "disagree" and found.differing == ["ar"] and found.by_language["ar"] == "1266"
    assert found.by_language["en"] == "1263"


def test_agreement_is_unknown_without_numbers_or_support():
    result = _result("von den Mongolen", "de", [[_item(1, ("de", DE.split(". ")[0] + ".", "Yuan/5"), ("en", EN, "Yuan/5"))]])
    [s] = find_support(result)
    assert agreement(s, result).status == "unknown"
    assert agreement(None, result).as_dict() == {"status": "unknown", "by_language": {}, "differing": [],
                                                 "passages": {}, "quotes": {}}


def test_the_changed_collection_changes_the_asked_number_in_one_copy_of_each_paragraph(shared_data):
    from crosearch_agent import qa_data
    from crosearch_agent.changed_numbers import changed_paragraphs, changes

    found = changes()
    assert len(found) >= 20 and len({c.doc_id for c in found}) == len(found)
    for change in found[:6]:
        original = {p.doc_id: p.context for p in qa_data.load_xquad(change.lang)[0]}[change.doc_id]
        changed = {p.doc_id: p.context for p in changed_paragraphs(change.lang)}[change.doc_id]
        assert numbers(original).count(change.old) == 1 and change.new not in numbers(original)
        assert numbers(changed).count(change.new) == 1 and change.old not in numbers(changed)
        # written in the copy's own digits, everything else untouched
        assert len(changed) - len(original) == len(change.new) - len(change.old)
        other = "en" if change.lang != "en" else "de"
        assert {p.doc_id: p.context for p in changed_paragraphs(other)}[change.doc_id] == \
            {p.doc_id: p.context for p in qa_data.load_xquad(other)[0]}[change.doc_id]


def test_a_small_count_written_in_words_in_one_version_is_no_disagreement():
    versions = [("de", "Er erzielte 118 Tackles und vier Sacks.", "NFL/1"),
                ("es", "Logró ciento dieciocho placajes y 4 capturas.", "NFL/1")]
    result = _result("118", "de", [[_item(1, *versions)]])
    [s] = find_support(result)
    assert agreement(s, result).status != "disagree"


def test_a_version_split_elsewhere_is_read_in_whichever_evidence_item_holds_its_sentence():
    # Each language cuts the document into passages at its own places: the aligner put the
    # Vietnamese passage holding the changed year in another item of another search.
    en = "Lefevre was born about 1455. He published the New Testament in 1523 and the whole Bible in 1530."
    de = "Lefevre wurde um 1455 geboren. Er veröffentlichte 1523 das Neue Testament und 1530 die ganze Bibel."
    vi_start = "Lefevre sinh khoảng năm 1455."
    vi_rest = "Ông xuất bản Tân ước năm 1523 và toàn bộ Kinh thánh năm 1533."
    local = [_item(1, ("de", de, "Huguenot/2"))]
    everywhere = [_item(1, ("de", de, "Huguenot/2"), ("en", en, "Huguenot/2"), ("vi", vi_start, "Huguenot/2", 0)),
                  _item(2, ("vi", vi_rest, "Huguenot/2", 1))]
    result = _result("1530", "de", [local, everywhere])
    [s] = find_support(result)
    found = agreement(s, result)
    assert found.status == "disagree" and found.differing == ["vi"] and found.by_language["vi"] == "1533"
    assert found.passages["vi"] == "xquad/vi/Huguenot/2/1" and found.quotes["vi"] == vi_rest
    assert found.by_language["en"] == "1530" and "1530" in found.quotes["en"]


def test_a_number_from_another_part_of_the_document_is_no_disagreement():
    # The only Vietnamese passage found is the document's first part: its 1455 is not what the
    # answer's sentence says, and the agreeing English version holds it too.
    en = "Lefevre was born about 1455. He published the whole Bible in 1530."
    de = "Er veröffentlichte 1530 die ganze Bibel."
    result = _result("1530", "de", [[_item(1, ("de", de, "Huguenot/2"), ("en", en, "Huguenot/2"),
                                              ("vi", "Lefevre sinh khoảng năm 1455.", "Huguenot/2"))]])
    [s] = find_support(result)
    assert agreement(s, result).status == "agree"
