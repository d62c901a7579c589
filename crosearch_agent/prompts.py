"""The agent protocol (Search-R1 style): prompt text, tag parsing and safe evidence rendering.

The policy writes `<think>…</think>`, then either `<search>query</search>` (generation stops
at `</search>`) or `<answer>…</answer>`. Retrieved evidence goes back inside
`<information>…</information>`. A trajectory is plain text, so anything that documents or
users contribute is escaped first: it must never open or close a protocol tag, and never look
like a tokenizer control token.

Escaping scheme: the `<` and `>` of anything that parses (or would parse, once closed) as a
protocol tag become the look-alikes `‹` and `›`, e.g. `</answer>` -> `‹/answer›`, so the text
stays readable; the same goes for control-token look-alikes (`<|im_end|>`, `<eos>`,
`<end_of_turn>`). `parse_turn` and `escape_document` share one tag pattern, so whatever the
parser could read as a tag is exactly what the escaper neutralises.
"""
from __future__ import annotations

import functools
import random
import re
from dataclasses import dataclass
from typing import NamedTuple

from crosearch_agent import languages

THINK, SEARCH, INFORMATION, ANSWER = "think", "search", "information", "answer"
TAGS = (THINK, SEARCH, INFORMATION, ANSWER)
ACTIONS = (SEARCH, ANSWER)
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
SEARCH_OPEN, SEARCH_CLOSE = "<search>", "</search>"
INFORMATION_OPEN, INFORMATION_CLOSE = "<information>", "</information>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
STOP_SEARCH = SEARCH_CLOSE
STOP_ANSWER = ANSWER_CLOSE
STOPS = (STOP_SEARCH, STOP_ANSWER)

_NAMES = "|".join(TAGS)
# What the parser reads as a tag: lenient about case, spaces and attributes, because a small
# model writes `<Answer >` too. Group 1 is "/" for a closing tag, group 2 the name.
TAG_RE = re.compile(rf"<\s*(/?)\s*({_NAMES})\b[^<>]*>", re.IGNORECASE)
# What the escaper neutralises: the same, with the closing `>` optional, so an unclosed
# fragment (`<answer x=1`) cannot be completed into a tag by whatever text follows it.
_ESCAPE_TAG_RE = re.compile(rf"<(\s*/?\s*(?:{_NAMES})\b[^<>]*)(>?)", re.IGNORECASE)
# Text a tokenizer would turn into control tokens (Gemma, Llama/Qwen-style `<|…|>`, `<s>`).
_CONTROL_RE = re.compile(r"<(/?(?:s|bos|eos|pad|unk|mask|start_of_turn|end_of_turn)>)", re.IGNORECASE)
LOOKALIKE = str.maketrans("<>", "‹›")


# ---------------------------------------------------------------- escaping

def escape_document(text: str) -> str:
    """Text from documents or users, made unable to open or close a protocol tag.

    Idempotent: escaped text contains no `<` that starts a tag name, so a second pass finds
    nothing to change.
    """
    text = _ESCAPE_TAG_RE.sub(lambda m: "‹" + m.group(1) + ("›" if m.group(2) else ""), text)
    text = _CONTROL_RE.sub(lambda m: "‹" + m.group(1).translate(LOOKALIKE), text)
    return text.replace("<|", "‹|").replace("|>", "|›")


# ---------------------------------------------------------------- parsing one turn

@dataclass(frozen=True)
class Turn:
    """What the policy did in one turn."""
    think: str | None
    search: str | None
    answer: str | None
    well_formed: bool
    problem: str = ""   # "; "-joined list of what was wrong, "" when well formed

    @property
    def action(self) -> str | None:
        return SEARCH if self.search is not None else ANSWER if self.answer is not None else None

    def render(self) -> str:
        """The turn in canonical form, for the trajectory history (repairs a consumed stop)."""
        parts = [f"{THINK_OPEN}{self.think or ''}{THINK_CLOSE}"]
        if self.search is not None:
            parts.append(f"{SEARCH_OPEN}{self.search}{SEARCH_CLOSE}")
        elif self.answer is not None:
            parts.append(f"{ANSWER_OPEN}{self.answer}{ANSWER_CLOSE}")
        return "\n".join(parts)


@dataclass
class _Element:
    name: str
    start: int          # where the content starts
    end: int = -1       # where the content ends
    ended_by: str = ""  # "close" (its own closing tag), "tag" (another tag), "eot" (end of text)


def _elements(text: str, problems: list[str]) -> list[_Element]:
    """The tagged elements of `text`, without nesting: an opening tag inside an open element
    ends that element (and is reported)."""
    found: list[_Element] = []
    current: _Element | None = None
    for i, m in enumerate(TAG_RE.finditer(text)):
        closing, name = m.group(1) == "/", m.group(2).lower()
        if current is None and closing and name == THINK and i == 0:
            # The prompt ended with `<think>` already open: the turn starts inside the think.
            found.append(_Element(THINK, 0, m.start(), "close"))
        elif current is None and closing:
            problems.append(f"stray </{name}>")
        elif current is None:
            current = _Element(name, m.end())
        elif closing and name == current.name:
            current.end, current.ended_by = m.start(), "close"
            found.append(current)
            current = None
        else:
            problems.append(f"<{'/' if closing else ''}{name}> inside <{current.name}>")
            current.end, current.ended_by = m.start(), "tag"
            found.append(current)
            current = None if closing else _Element(name, m.end())
    if current is not None:
        current.end, current.ended_by = len(text), "eot"
        found.append(current)
    return found


def parse_turn(generated: str) -> Turn:
    """The think and the first action (search or answer) of one generated turn.

    `generated` may start inside an already open `<think>` (the prompt opened it) and may
    end at `<search>q` without `</search>` when the backend consumed the stop string; both
    are well formed. Everything else that is off is named in `problem`.
    """
    problems: list[str] = []
    elements = _elements(generated, problems)
    thinks = [e for e in elements if e.name == THINK]
    actions = [e for e in elements if e.name in ACTIONS]

    think = generated[thinks[0].start:thinks[0].end].strip() if thinks else None
    if not thinks:
        problems.append("no <think>")
    elif thinks[0].ended_by == "eot":
        problems.append("unclosed <think>")
    if len(thinks) > 1:
        problems.append("repeated <think>")
    if any(e.name == INFORMATION for e in elements):
        problems.append("the policy wrote <information> itself")
    if thinks and actions and actions[0].start < thinks[0].start:
        problems.append("action before <think>")

    search = answer = None
    if not actions:
        problems.append("no <search> or <answer>")
    else:
        first = actions[0]
        content = generated[first.start:first.end].strip()
        if len(actions) > 1:
            problems.append(f"{len(actions)} actions; the first is used")
        if first.name == SEARCH:
            # Ending at end of text is fine here: generation stopped at `</search>`.
            search = content or None
            if not content:
                problems.append("empty <search>")
        else:
            answer = content or None
            if not content:
                problems.append("empty <answer>")
            if first.ended_by == "eot":
                problems.append("unclosed <answer>")
    problems = list(dict.fromkeys(problems))
    return Turn(think, search, answer, not problems, "; ".join(problems))


# ---------------------------------------------------------------- rendering evidence

class Doc(NamedTuple):
    """One document as shown to the policy; plain (lang, title, text) tuples work too."""
    lang: str
    title: str
    text: str
    also_in: tuple[str, ...] = ()


def _lang_label(code: str) -> str:
    return f"{languages.name(code)} ({code})"


def truncate(text: str, max_chars: int) -> str:
    """`text` cut to at most `max_chars` characters (plus "…"), on a word boundary when one
    is near; scripts without spaces (zh, ja, th) are cut mid-word."""
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    space = max(cut.rfind(" "), 0)
    if space >= max_chars * 0.6:
        cut = cut[:space]
    return cut.rstrip() + "…"


def _one_line(text: str) -> str:
    # One document per line: a document's own newlines could fake a "Doc 2 …" line.
    return " ".join(text.split())


def render_doc(number: int, doc, max_chars: int = 700) -> str:
    doc = Doc(*doc)
    langs = _lang_label(doc.lang)
    if doc.also_in:
        langs += "; also in: " + ", ".join(_lang_label(code) for code in doc.also_in)
    title = _one_line(doc.title.replace("_", " "))
    text = truncate(_one_line(doc.text), max_chars)
    head = f"Doc {number} [{langs}]" + (f" ({escape_document(title)})" if title else "")
    return f"{head}: {escape_document(text)}"


def render_documents(docs, max_chars: int = 700) -> str:
    """The `<information>` block for documents given as `Doc` or (lang, title, text) tuples."""
    lines = [render_doc(i, doc, max_chars) for i, doc in enumerate(docs, 1)]
    body = "\n".join(lines) if lines else "No results found for this search."
    return f"{INFORMATION_OPEN}\n{body}\n{INFORMATION_CLOSE}"


def evidence_doc(evidence, query_lang: str) -> Doc:
    """The member of an `Evidence` item to show: the query language's version if it has one
    (the policy reads that best), listing the other languages it was found in."""
    shown = evidence.shown(query_lang)
    also_in = tuple(dict.fromkeys(h.passage.lang for h in evidence.members
                                  if h is not shown and h.passage.lang != shown.passage.lang))
    return Doc(shown.passage.lang, shown.passage.title, shown.passage.text, also_in)


def render_information(evidence, query_lang: str, max_chars: int = 700) -> str:
    """The `<information>` block for retrieved `Evidence` items."""
    return render_documents([evidence_doc(e, query_lang) for e in evidence], max_chars)


# ---------------------------------------------------------------- prompt text

def system_instructions(answer_lang: str) -> str:
    name = languages.name(answer_lang)
    return (
        "Answer the question using a search engine over documents in many languages.\n"
        f"First think inside {THINK_OPEN} and {THINK_CLOSE}. To search, write "
        f"{SEARCH_OPEN}a query{SEARCH_CLOSE}; the results come back between "
        f"{INFORMATION_OPEN} and {INFORMATION_CLOSE}, with the language of each document "
        "marked. Documents may be in another language than the question: use them all. "
        "You may think and search again as often as needed.\n"
        f"When you know the answer, write it inside {ANSWER_OPEN} and {ANSWER_CLOSE}: "
        "briefly, in a few words, without explanation, and always in the language of the "
        f"question, translating it if needed. The last question below is in {name}: answer it in {name}.\n"
    )


def force_search_turn(question: str) -> str:
    """A first turn that searches for the user's question as it is."""
    return f"{THINK_OPEN}I need to search for this.{THINK_CLOSE}\n{SEARCH_OPEN}{_question_text(question)}{SEARCH_CLOSE}"


def final_answer_nudge(answer_lang: str, has_evidence: bool = True) -> str:
    """Opens the answer turn when the policy must answer (turn limit, single-turn baselines).

    No instructions in prose: a base model copies them (measured: the bundled 270M model wrote
    "No more searches are possible." as its answer). After evidence the turn opens with
    `<think>`, as the worked examples' answer turns do, and the agent reads the answer from
    it whatever the policy writes next; with no evidence at all it opens at `<answer>`.
    `answer_lang` is kept in the signature: the system instructions already name it."""
    return THINK_OPEN if has_evidence else ANSWER_OPEN


def _question_text(question: str) -> str:
    return escape_document(_one_line(question))


def build_prompt(question: str, answer_lang: str, history: str = "", few_shot: int | bool = True,
                 data_dir=None) -> str:
    """The full text the policy continues: instructions, worked examples, the question and
    the trajectory so far. It ends with `<think>` open, ready for the next turn, unless the
    history already ends inside an open tag."""
    parts = [system_instructions(answer_lang)]
    if few_shot:  # True: the default 3 examples; an int: that many
        parts.append(few_shot_examples(3 if few_shot is True else int(few_shot), data_dir=data_dir))
    trajectory = f"Question: {_question_text(question)}\n"
    if _ends_open(history):
        trajectory += history  # the caller opened a tag for the model to continue in
    elif history.strip():
        trajectory += history.rstrip("\n") + "\n" + THINK_OPEN
    else:
        trajectory += THINK_OPEN
    parts.append(trajectory)
    return "\n".join(parts)


def _ends_open(history: str) -> bool:
    """Does the history end inside a tag it opened (e.g. a prefilled `<think>Doc`)?"""
    tags = list(TAG_RE.finditer(history))
    return bool(tags) and tags[-1].group(1) != "/"


# ---------------------------------------------------------------- few-shot examples

# (question language, evidence language): different languages, and one example where the
# evidence is in another language than the question, which is the point of the agent.
FEW_SHOT_PAIRS = (("de", "de"), ("zh", "en"), ("es", "es"), ("ru", "ru"), ("ar", "en"), ("vi", "vi"))
FEW_SHOT_SPLIT = "train"  # never dev or test (EVAL.md)
EXAMPLE_CHARS = 400
FEW_SHOT_SEED = 0


def excerpt(text: str, answer: str, max_chars: int = EXAMPLE_CHARS) -> str:
    """About `max_chars` of `text` around the first occurrence of `answer`, cut on spaces
    where the script has them, "…" where text was dropped."""
    text = _one_line(text)
    at = max(text.find(answer), 0)
    start = max(0, min(at - (max_chars - len(answer)) // 2, len(text) - max_chars))
    end = min(len(text), start + max_chars)
    if start > 0:
        space = text.find(" ", start, at)
        start = space + 1 if space != -1 else start
    if end < len(text):
        space = text.rfind(" ", at + len(answer), end)
        end = space if space != -1 else end
    return ("…" if start > 0 else "") + text[start:end].strip() + ("…" if end < len(text) else "")


def _usable(question, context: str) -> bool:
    # Short, and found exactly once, so the excerpt around it is the supporting sentence.
    answer = question.answers[0] if question.answers else ""
    return bool(answer) and len(answer) <= 30 and context.count(answer) == 1 and len(question.question) <= 150


def _digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


def _visibly_same(answer: str, found: str) -> bool:
    """Is an answer in one language plainly the one found in the other (same string or same
    number)? XQuAD's translated answers often are not, which would teach the wrong thing."""
    return answer == found or _digits(answer) != "" and _digits(answer) == _digits(found)


def _example(question, evidence_question, evidence_context: str) -> str:
    qname, ename = languages.name(question.lang), languages.name(evidence_question.lang)
    answer, found = question.answers[0], evidence_question.answers[0]
    doc = Doc(evidence_question.lang, question.title, excerpt(evidence_context, found))
    if evidence_question.lang == question.lang:
        conclusion = f"Doc 1 says: {found}. The question is in {qname}, so I answer in {qname}."
    else:
        conclusion = f"Doc 1 is in {ename} and says: {found}. The question is in {qname}, so I answer in {qname}: {answer}."
    return (f"Question: {_question_text(question.question)}\n"
            f"{force_search_turn(question.question)}\n"
            f"{render_documents([doc], EXAMPLE_CHARS + 2)}\n"
            f"{THINK_OPEN}{escape_document(conclusion)}{THINK_CLOSE}\n"
            f"{ANSWER_OPEN}{escape_document(answer)}{ANSWER_CLOSE}\n")


@functools.lru_cache(maxsize=8)
def few_shot_examples(n: int = 3, data_dir=None) -> str:
    """`n` complete worked trajectories from XQuAD's train split, in different languages.

    Deterministic: the same seeded choice every call (and cached, as every prompt uses it).
    """
    from crosearch_agent import qa_data

    if not 0 <= n <= len(FEW_SHOT_PAIRS):
        raise ValueError(f"few_shot_examples: n must be 0..{len(FEW_SHOT_PAIRS)}, got {n}")
    contexts, by_id = {}, {}
    for lang in sorted({code for pair in FEW_SHOT_PAIRS[:n] for code in pair}):
        contexts[lang] = {p.doc_id: p.context for p in qa_data.load_xquad(lang, data_dir)[0]}
        by_id[lang] = {q.id: q for q in qa_data.xquad_questions([lang], FEW_SHOT_SPLIT, data_dir)}
    examples, used_titles = [], set()
    for qlang, elang in FEW_SHOT_PAIRS[:n]:
        pairs = []
        for qid in sorted(by_id[qlang]):
            question, evidence_question = by_id[qlang][qid], by_id[elang].get(qid)
            if (evidence_question and question.title not in used_titles
                    and _usable(question, contexts[qlang][question.doc_id])
                    and _usable(evidence_question, contexts[elang][evidence_question.doc_id])
                    and (qlang == elang or _visibly_same(question.answers[0], evidence_question.answers[0]))):
                pairs.append((question, evidence_question))
        question, evidence_question = random.Random(f"{FEW_SHOT_SEED}/{qlang}/{elang}").choice(pairs)
        used_titles.add(question.title)  # one article per example: more variety
        examples.append(_example(question, evidence_question, contexts[elang][evidence_question.doc_id]))
    return "\n".join(examples)
