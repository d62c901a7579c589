"""What the chat app shows, as pure functions: agent steps -> chat panels, evidence -> cards,
a per-turn summary, and the JSON the headless API returns.

Nothing here loads a model or touches the network, so every function is unit-tested fast.
All text that came from documents, users or the policy goes through `md_text` (chat, which
renders Markdown) or `html_text` (evidence view, raw HTML): protocol tags become the
look-alikes the policy saw (`‹answer›`, see `crosearch_agent.prompts.escape_document`) and
nothing can inject markup.
"""
from __future__ import annotations

import html
import re
import unicodedata
from collections import Counter

import gradio as gr

from crosearch_agent import prompts
from crosearch_agent.agent import (AnswerStep, ErrorStep, EvidenceStep, LanguageStep, SearchStep, Step, ThinkStep,
                                   missing_note)
from crosearch_agent.languages import name as lang_name
from crosearch_agent.support import Agreement

EXCERPT_CHARS = 220          # passage text shown per item inside a chat panel
_MD_SPECIAL = re.compile(r"([\\`*_\[\]#|~$>])")
_MD_LINE_START = re.compile(r"^(\s*)([-+]|\d+\.)(?=\s)", re.MULTILINE)  # would start a list


# ---------------------------------------------------------------- escaping

def lang_label(code: str) -> str:
    return f"{lang_name(code)} ({code})"


def md_text(text: str) -> str:
    """Untrusted text for a Markdown chat message: tags neutralised, markup characters escaped."""
    text = prompts.escape_document(str(text))
    text = text.replace("&", "&amp;").replace("<", "&lt;")
    text = _MD_SPECIAL.sub(r"\\\1", text)
    return _MD_LINE_START.sub(lambda m: m.group(1) + ("\\" + m.group(2) if m.group(2) in "-+" else m.group(2)[:-1] + "\\."), text)


def html_text(text: str) -> str:
    """Untrusted text for raw HTML (the evidence view)."""
    return html.escape(prompts.escape_document(str(text)), quote=True)


def one_line(text: str, max_chars: int | None = None) -> str:
    text = " ".join(str(text).split())
    return prompts.truncate(text, max_chars) if max_chars else text


# ---------------------------------------------------------------- steps -> chat panels

def step_message(step: Step, note: str = "") -> gr.ChatMessage:
    """One agent step as one chat message: a collapsible panel, or (answer, error) plain text.

    A search panel starts "pending"; `finish_search` closes it when its evidence arrives.
    `note` adds a line to the panel (the app's remark that a language has no index).
    """
    done = {"status": "done", "duration": round(step.duration_s, 2)}
    if isinstance(step, LanguageStep):
        body = f"Detected {lang_label(step.lang)}, confidence {step.confidence:.0%}."
        if step.fallback:
            body += f"\n\n{md_text(step.reason)}"
        if note:
            body += f"\n\n{md_text(note)}"
        meta = {"title": f"Language: {lang_label(step.lang)}", **done}
        if note or step.fallback:  # worth reading: leave the panel open (a status of "done" closes it)
            del meta["status"]
        return gr.ChatMessage(body, metadata=meta)
    if isinstance(step, ThinkStep):
        return gr.ChatMessage(md_text(step.text) or "…", metadata={"title": f"Thinking (turn {step.turn})", **done})
    if isinstance(step, SearchStep):
        where = lang_label(step.languages[0]) if len(step.languages) == 1 else f"{len(step.languages)} languages"
        body = (f"Query: {md_text(step.query)}\n\nSearching ({step.scope}): "
                + ", ".join(lang_label(l) for l in step.languages))
        return gr.ChatMessage(body, metadata={"title": f"Search {step.turn} ({step.scope}, {where}): {md_text(one_line(step.query, 80))}",
                                              "status": "pending"})
    if isinstance(step, EvidenceStep):
        langs = ", ".join(step.languages) or "no language"
        lines = [evidence_line(item, step.read_lang) for item in step.items] or ["No passages found."]
        meta = {"title": f"Evidence from search {step.turn}: {len(step.items)} items ({langs})", **done}
        if step.missing:  # a retrieval service was down: say which languages the evidence lacks, panel open
            lines.append(f"\n_{md_text(missing_note(step.missing))}_")
            meta["title"] += f"; {len(step.missing)} not searched"
            del meta["status"]
        return gr.ChatMessage("\n".join(lines), metadata=meta)
    if isinstance(step, AnswerStep):
        if not step.text:
            return gr.ChatMessage("I could not find an answer in the evidence (the model gave none).")
        js = step_json(step)
        return gr.ChatMessage(md_text(step.text) + "\n\n" + support_markdown(js["support"], js["agreement"]))
    if isinstance(step, ErrorStep):
        return gr.ChatMessage(f"**Sorry:** {md_text(step.message)}")
    return gr.ChatMessage(md_text(str(step)), metadata={"title": step.kind, **done})


def evidence_line(item, read_lang: str = "") -> str:
    """One evidence item as a Markdown list line: the version the policy read (the question's
    language where the item has it), the item's other languages, title, excerpt."""
    read, *others = (h.passage for h in item.read_first(read_lang))
    also = [p.lang for p in others]
    where = lang_label(read.lang) + (f"; also in {', '.join(lang_label(l) for l in also)}" if also else "")
    return f"{item.rank}. [{where}] **{md_text(one_line(read.title))}**: {md_text(one_line(read.text, EXCERPT_CHARS))}"


def finish_search(message: gr.ChatMessage, duration_s: float) -> None:
    """Close a pending search panel once its evidence arrived."""
    message.metadata["status"] = "done"
    message.metadata["duration"] = round(duration_s, 2)


def working_message(text: str = "The model is reading the evidence and writing…") -> gr.ChatMessage:
    """A pending panel while the policy generates (so the page never looks dead)."""
    return gr.ChatMessage("", metadata={"title": text, "status": "pending"})


# ---------------------------------------------------------------- JSON (API and the evidence view)

def evidence_json(item, read_lang: str = "") -> dict:
    """One evidence item; `read`: the id of the version the policy read (`Evidence.shown`)."""
    return {"rank": item.rank, "score": round(float(item.score), 6), "lang": item.lang, "lang_name": lang_name(item.lang),
            "title": item.title, "text": item.text, "languages": list(item.languages),
            "members": [{"id": h.passage.id, "lang": h.passage.lang, "title": h.passage.title, "text": h.passage.text,
                         "score": round(float(h.score), 6), "rank": h.rank} for h in item.members],
            "read": item.shown(read_lang).passage.id}


def step_json(step: Step) -> dict:
    out = {"kind": step.kind, "t": round(step.t, 3), "duration_s": round(step.duration_s, 3)}
    if isinstance(step, LanguageStep):
        out.update(lang=step.lang, lang_name=lang_name(step.lang), confidence=round(step.confidence, 4),
                   fallback=step.fallback, reason=step.reason)
    elif isinstance(step, ThinkStep):
        out.update(text=step.text, turn=step.turn)
    elif isinstance(step, SearchStep):
        out.update(query=step.query, languages=list(step.languages), scope=step.scope, turn=step.turn)
    elif isinstance(step, EvidenceStep):
        out.update(turn=step.turn, items=[evidence_json(i, step.read_lang) for i in step.items],
                   missing=dict(step.missing))
    elif isinstance(step, AnswerStep):
        out.update(text=step.text, lang=step.lang, forced=step.forced, support=[s.as_dict() for s in step.support],
                   agreement=(step.agreement or Agreement()).as_dict())
    elif isinstance(step, ErrorStep):
        out.update(message=step.message, cause=step.cause)
    return out


def turn_record(question: str, steps: list[Step], note: str = "") -> dict:
    """Everything about one question, JSON-able: what the API returns and the evidence view reads."""
    js = [step_json(s) for s in steps]
    lang = next((s["lang"] for s in js if s["kind"] == "language"), "")
    answer = next((s for s in js if s["kind"] == "answer"), None)
    error = next((s["message"] for s in js if s["kind"] == "error"), None)
    record = {"question": question, "lang": lang, "lang_name": lang_name(lang) if lang else "",
              "answer": answer["text"] if answer else None, "forced": bool(answer and answer["forced"]),
              "error": error, "note": note, "latency_s": round(steps[-1].t, 3) if steps else 0.0, "steps": js,
              "support": answer["support"] if answer else [],
              "agreement": answer["agreement"] if answer else Agreement().as_dict()}
    record["summary"] = summarize(record)
    return record


# ---------------------------------------------------------------- evidence analysis

def unique_members(record: dict) -> list[dict]:
    """Every passage any search of the turn returned, once (by passage id), best rank first."""
    seen: dict[str, dict] = {}
    for step in record["steps"]:
        if step["kind"] != "evidence":
            continue
        for item in step["items"]:
            for m in item["members"]:
                seen.setdefault(m["id"], m)
    return list(seen.values())


def _has_cjk(text: str) -> bool:
    return any(unicodedata.name(ch, "").startswith(("CJK", "HIRAGANA", "KATAKANA", "THAI")) for ch in text)


def answer_source(record: dict) -> tuple[str, list[str]]:
    """Where the answer came from, by its support: 'local' (a passage in the question's
    language), 'cross-lingual' (another language's), 'not found' (nothing supports it) or
    'no answer'; and the languages of the supporting passage's versions."""
    if not (record.get("answer") or "").strip():
        return "no answer", []
    if not record.get("support"):
        return "not found", []
    first = record["support"][0]
    found_in = sorted({first["lang"], *first["also_in"]})
    return ("local" if first["lang"] == record.get("lang") else "cross-lingual"), found_in


def summarize(record: dict) -> dict:
    members = unique_members(record)
    counts = Counter(m["lang"] for m in members)
    source, found_in = answer_source(record)
    searches = [s for s in record["steps"] if s["kind"] == "search"]
    return {"passages": len(members), "by_language": dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))),
            "answer_source": source, "answer_found_in": found_in, "searches": len(searches),
            "scopes": [s["scope"] for s in searches], "not_searched": not_searched(record)}


def not_searched(record: dict) -> dict[str, str]:
    """Languages the turn meant to search but never could (their retrieval service was down
    in every search that asked for them), each with why."""
    missing, searched = {}, set()
    for search, ev in _search_sections(record):
        gone = ev.get("missing") or {}
        missing.update(gone)
        searched |= {l for l in search["languages"] if l not in gone}
    return {l: why for l, why in sorted(missing.items()) if l not in searched}


def _names(codes) -> str:
    names = [lang_name(c) for c in codes]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def support_markdown(support: list[dict], agreement: dict) -> str:
    """The answer's support line for the chat: where it came from, in how many languages
    the versions agree, or that they disagree (with each language's value)."""
    if not support:
        return "_No passage in the evidence supports this answer: check it before you rely on it._"
    s = support[0]
    line = (f"Answer from: {lang_name(s['lang'])}, search {s['search']}, rank {s['rank']} "
            f"(“{md_text(one_line(s['quote'], 160))}”)")
    if s["also_in"]:
        line += f"; the same passage also in {_names(s['also_in'])}"
    values = agreement.get("by_language", {})
    if agreement.get("status") == "agree":
        line += f". The versions agree in {len(values)} languages ({_names(values)})."
    elif agreement.get("status") == "disagree":
        line += (". **Sources disagree:** " + "; ".join(f"{lang_name(l)} says {md_text(v)}" for l, v in values.items())
                 + " (see the evidence view).")
    else:
        line += "."
    return "_" + line + "_" if agreement.get("status") != "disagree" else line


def summary_markdown(record: dict) -> str:
    s = record["summary"]
    if not s["passages"]:
        reason = f" ({md_text(record['error'])})" if record.get("error") else ""
        return f"No evidence for this question{reason}."
    per_lang = ", ".join(f"{lang_label(l)}: {n}" for l, n in s["by_language"].items())
    out = (f"**{s['passages']} passages** from {len(s['by_language'])} languages in {s['searches']} searches "
           f"({', '.join(s['scopes'])}).  \nPer language: {per_lang}.")
    if s.get("not_searched"):
        out += f"  \n_{md_text(missing_note(s['not_searched']))}_"
    if record.get("answer"):
        out += "  \n" + support_markdown(record.get("support", []), record.get("agreement", {}))
    return out


# ---------------------------------------------------------------- highlighting and cards

def _query_terms(query: str) -> list[str]:
    """Words worth marking in a passage: words of 4+ characters or numbers, and pairs of
    characters from scripts written without spaces."""
    terms = []
    for word in re.findall(r"\w+", query):
        if _has_cjk(word):
            terms += [word[i:i + 2] for i in range(len(word) - 1)]
        elif len(word) >= 4 or word.isdigit():
            terms.append(word)
    return list(dict.fromkeys(terms))


def _term_re(term: str) -> str:
    """A term as a regex that matches whole words only ("Bowl" not in "Bowler", "50" not
    in "1950"), except in scripts written without spaces."""
    body = re.escape(term)
    if _has_cjk(term):
        return body
    return (r"(?<!\w)" if term[:1].isalnum() else "") + body + (r"(?!\w)" if term[-1:].isalnum() else "")


def highlight(text: str, answer: str | None = None, query: str = "", quote: str | None = None) -> str:
    """HTML of `text` (escaped) with the supporting sentence `quote` marked `<mark class="sup">`,
    elsewhere the answer `<mark class="ans">` and then the query's words `<mark class="q">`
    (case-insensitive)."""
    label = [""] * len(text)
    at = text.find(quote) if quote else -1
    if at >= 0:
        label[at:at + len(quote)] = ["sup"] * len(quote)
    for terms, cls in (([answer.strip()] if answer and answer.strip() else [], "ans"), (_query_terms(query), "q")):
        if not terms:
            continue
        pattern = re.compile("|".join(_term_re(t) for t in sorted(terms, key=len, reverse=True)), re.IGNORECASE)
        for m in pattern.finditer(text):
            if m.end() > m.start() and not any(label[m.start():m.end()]):
                label[m.start():m.end()] = [cls] * (m.end() - m.start())
    out, start = [], 0
    for i in range(1, len(text) + 1):
        if i == len(text) or label[i] != label[start]:
            chunk = html_text(text[start:i])
            out.append(f'<mark class="{label[start]}">{chunk}</mark>' if label[start] else chunk)
            start = i
    return "".join(out)


def _search_sections(record: dict):
    """(search step, evidence step) pairs of one turn, in order."""
    search = None
    for step in record["steps"]:
        if step["kind"] == "search":
            search = step
        elif step["kind"] == "evidence":
            yield search or {"turn": step["turn"], "query": "", "scope": "", "languages": []}, step


def anchor(passage_id: str) -> str:
    """The HTML id of a passage's text in the evidence view (links point at it)."""
    return "cs-p-" + re.sub(r"[^A-Za-z0-9_-]", "-", passage_id)


def id_attribute(passage_id: str, anchored: set[str]) -> str:
    """` id="..."` for a passage's first appearance in the view, nothing for later ones (both
    searches may show it): an HTML id names one element, and links go to the first."""
    target = anchor(passage_id)
    if target in anchored:
        return ""
    anchored.add(target)
    return f' id="{target}"'


def agreement_html(record: dict, anchored: set[str] = frozenset()) -> str:
    """The "Sources disagree" panel (each language's value and the sentence it was read in,
    linked to its passage where the view shows it), or the line saying in how many languages
    the versions agree."""
    agreement = record.get("agreement") or {}
    values = agreement.get("by_language", {})
    if agreement.get("status") == "disagree":
        rows = []
        for lang, value in values.items():
            target = anchor(agreement.get("passages", {}).get(lang, ""))
            name = (f'<a href="#{target}">{html_text(lang_label(lang))}</a>' if target in anchored
                    else html_text(lang_label(lang)))
            quote = agreement.get("quotes", {}).get(lang)
            differs = ' class="cs-differs"' if lang in agreement.get("differing", []) else ""
            rows.append(f'<li data-lang="{html_text(lang)}"{differs}>{name}: <b>{html_text(value)}</b>'
                        + (f' <span class="cs-quote">“{html_text(one_line(quote, 240))}”</span>' if quote else "") + "</li>")
        return ('<div class="cs-disagree"><b>Sources disagree</b> at the sentence the answer came from:'
                f'<ul>{"".join(rows)}</ul></div>')
    if agreement.get("status") == "agree":
        return (f'<div class="cs-agree">The versions agree in {len(values)} languages: '
                + ", ".join(html_text(lang_name(l)) for l in values) + ".</div>")
    return ""


def evidence_html(record: dict | None) -> str:
    """The evidence view of one turn: per search, one card per evidence item; the item that
    supports the answer shows its supporting sentence marked and all its versions."""
    if not record:
        return '<div class="cs-empty">Ask a question: its evidence appears here.</div>'
    answer, parts, shown, anchored = record.get("answer"), [], {}, set()
    support = (record.get("support") or [None])[0]
    for search, ev in _search_sections(record):
        ids = tuple(m["id"] for item in ev["items"] for m in item["members"])
        head = (f'<h4 class="cs-search">Search {search["turn"]} ({html_text(search["scope"])}): '
                f'“{html_text(search["query"])}” in {html_text(", ".join(search["languages"]))}</h4>')
        if ev.get("missing"):
            head += f'<p class="cs-missing">{html_text(missing_note(ev["missing"]))}</p>'
        if ids and ids in shown:
            parts.append(head + f'<p class="cs-same">Same {len(ev["items"])} items as search {shown[ids]}.</p>')
            continue
        shown[ids] = search["turn"]
        cards = [evidence_card(item, answer, search["query"], support, anchored) for item in ev["items"]]
        parts.append(head + ("".join(cards) or '<p class="cs-same">No passages found.</p>'))
    lang = record.get("lang") or ""
    head = (f'<div class="cs-head" data-turn-lang="{html_text(lang)}">Evidence for “{html_text(one_line(record["question"], 200))}”'
            + (f" ({html_text(lang_label(lang))})" if lang else "")
            + (f' — answer: <b>{html_text(answer)}</b>' if answer else "") + "</div>")
    if not parts:
        return head + f'<div class="cs-empty">No evidence for this question. {html_text(record.get("error") or "")}</div>'
    return head + agreement_html(record, anchored) + '<div class="cs-evidence">' + "".join(parts) + "</div>"


def evidence_card(item: dict, answer: str | None, query: str, support: dict | None, anchored: set[str]) -> str:
    """One evidence item's card; `anchored`: the passage ids the view has given so far (updated).
    It shows the version the answer came from, else the one the policy read."""
    members = item["members"]
    supporting = next((m for m in members if support and m["id"] == support["passage_id"]), None)
    main = supporting or next((m for m in members if m["id"] == item.get("read")), members[0])
    if supporting is None:
        others = [m for m in members if m is not main]
        also = ", ".join(f'{html_text(lang_label(m["lang"]))} (rank {m["rank"]})' for m in others)
        body = (f'<div class="cs-text"{id_attribute(main["id"], anchored)}>{highlight(main["text"], answer, query)}</div>'
                + (f'<div class="cs-also">Also found in: {also}</div>' if also else
                   '<div class="cs-also">Found in this language only.</div>'))
        return (f'<div class="cs-card" data-lang="{html_text(main["lang"])}">' + _card_meta(item, main) + body
                + "</div>")
    # The supporting item: its supporting version with the sentence marked, then every other version.
    text = f'<div class="cs-text"{id_attribute(main["id"], anchored)}>{highlight(main["text"], answer, query, support["quote"])}</div>'
    versions = "".join(f'<div class="cs-version" data-lang="{html_text(m["lang"])}"{id_attribute(m["id"], anchored)}>'
                       f'<b>{html_text(lang_label(m["lang"]))}</b> (rank {m["rank"]}): {highlight(m["text"], None, query)}</div>'
                       for m in members if m is not supporting)
    return (f'<div class="cs-card" data-support="{html_text(support["how"])}" data-lang="{html_text(main["lang"])}">' + _card_meta(item, main)
            + f'<div class="cs-why">The answer came from this passage ({html_text(support["how"])}).</div>'
            + text
            + (f'<details class="cs-versions" open><summary>The same passage in {len(members) - 1} more '
               f'language{"s" if len(members) > 2 else ""}</summary>{versions}</details>' if versions else "")
            + "</div>")


def _card_meta(item: dict, shown: dict) -> str:
    return (f'<div class="cs-meta"><b>#{item["rank"]}</b> · <span class="cs-lang">{html_text(lang_label(shown["lang"]))}</span>'
            f' · fused score {item["score"]:.4f} · <i>{html_text(shown["title"])}</i></div>')


def turn_choices(records: list[dict]) -> list[tuple[str, int]]:
    return [(f"{i + 1}. [{r['lang'] or '?'}] {one_line(r['question'], 60) or '(empty)'}", i) for i, r in enumerate(records)]


EVIDENCE_CSS = """
.cs-card {border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 8px 12px; margin: 6px 0;}
.cs-meta {font-size: 0.9em; color: var(--body-text-color-subdued); margin-bottom: 4px;}
.cs-also, .cs-same {font-size: 0.85em; color: var(--body-text-color-subdued); margin-top: 4px;}
.cs-text mark.ans {background: #ffd54f; color: #000; font-weight: 600;}
.cs-text mark.q, .cs-version mark.q {background: #c8e6c9; color: #000;}
.cs-text mark.sup {background: #bbdefb; color: #000; font-weight: 600;}
.cs-card[data-support] {border: 2px solid #1e88e5;}
.cs-why {font-size: 0.85em; color: #1e88e5; margin-bottom: 4px;}
.cs-version {font-size: 0.9em; margin: 4px 0 4px 8px;}
.cs-disagree {border: 2px solid #e53935; border-radius: 8px; padding: 6px 12px; margin: 6px 0; background: #ffebee; color: #000;}
.cs-agree {font-size: 0.9em; color: #2e7d32; margin: 6px 0;}
.cs-search {margin: 12px 0 4px 0;}
.cs-missing {font-size: 0.9em; color: #e65100; margin: 2px 0 4px 0;}
"""
