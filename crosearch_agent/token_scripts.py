"""Which tokens of a vocabulary may write an answer in the asker's scripts.

A policy that reads a Greek document for a German question sometimes answers in Greek, or in
both ("Nieu Ίνγκλαντ Πάτριοτς"): on the XQuAD test split, 31 of the shipped policy's 38
answers in the wrong language had letters of a script the question's language does not use.
The agent therefore decodes the answer (only the answer, after `<answer>`) from the tokens
whose letters are all of the question language's scripts or Latin, which languages of other
scripts mix in for names and acronyms ("NFL", "Lady Gaga"): `answer_scripts(lang)`.

`allowed_token_ids(tokenizer, scripts)` is computed once per tokenizer and script set.
"""
from __future__ import annotations

import functools
import unicodedata

from crosearch_agent import languages

LATIN = "LATIN"
# Every script a language of the project is written in: a combining mark named after one of
# these ("DEVANAGARI VOWEL SIGN AA") belongs to it; other marks ("COMBINING ACUTE ACCENT")
# belong to every script.
_KNOWN = frozenset().union(*languages.SCRIPTS.values())


def answer_scripts(lang: str) -> frozenset[str] | None:
    """The scripts an answer to a question in `lang` may use: the language's own and Latin.
    None for a language of unknown script (no constraint)."""
    own = languages.SCRIPTS.get(lang)
    return own | {LATIN} if own else None


def text_fits(text: str, scripts: frozenset[str]) -> bool:
    """Are all of the text's letters (and script-bound marks) of `scripts`? Digits,
    punctuation, spaces and symbols fit every script."""
    for ch in text:
        category = unicodedata.category(ch)
        if category.startswith("L"):
            if languages.script(ch) not in scripts:
                return False
        elif category.startswith("M"):
            s = languages.script(ch)
            if s in _KNOWN and s not in scripts:
                return False
    return True


def _piece_text(piece: str) -> str | None:
    """A vocabulary piece as text; None for byte pieces beyond ASCII ("<0xCE>"), which can
    spell a letter of any script."""
    if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
        return chr(int(piece[3:5], 16)) if int(piece[3:5], 16) < 0x80 else None
    return piece.replace("▁", " ").replace("Ġ", " ")


@functools.lru_cache(maxsize=32)
def _allowed(tokenizer, scripts: frozenset[str], closing: str) -> tuple[int, ...]:
    special = set(tokenizer.all_special_ids) | {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    ends = {i for i in (tokenizer.eos_token_id, *_eos_ids(tokenizer)) if i is not None}
    allowed = set(ends) | set(tokenizer.encode(closing, add_special_tokens=False))
    vocab = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    for i, piece in enumerate(vocab):
        if i in special or piece is None:
            continue
        text = _piece_text(piece)
        # Markup pieces ("<b>", "</td>") are Latin letters, but no part of an answer: kept to
        # Latin, the policy was seen to write "Nieu <b>In</b>" where it meant Greek.
        if text is not None and "<" not in text and ">" not in text and text_fits(text, scripts):
            allowed.add(i)
    return tuple(sorted(allowed))


def _eos_ids(tokenizer) -> list[int]:
    # Chat models end a turn with a token of their own (Gemma's <end_of_turn>, Qwen's <|im_end|>).
    ids = []
    for name in ("<end_of_turn>", "<|im_end|>", "<|endoftext|>"):
        i = tokenizer.convert_tokens_to_ids(name)
        if isinstance(i, int) and i != tokenizer.unk_token_id:
            ids.append(i)
    return ids


def allowed_token_ids(tokenizer, scripts: frozenset[str], closing: str = "") -> list[int]:
    """The ids of `tokenizer`'s tokens that write only letters of `scripts` and no markup,
    plus the end tokens and the tokens of `closing` (the `</answer>` that ends the answer
    must stay writable whatever the script)."""
    return list(_allowed(tokenizer, frozenset(scripts), closing))
