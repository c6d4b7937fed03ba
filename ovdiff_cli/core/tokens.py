"""Where the class phrase sits in a prompt's tokens (docs/method.md §1, "Target positions").

Positions count in the text encoder's token sequence (``CONTEXT_LENGTH`` long), BOS at 0.
Tokens are compared as strings, so these functions need no tokenizer: the caller tokenises the
pieces.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

#: Length of the token sequence CLIP's text encoders read (SD-1.5's and CLIP ViT-B/16's alike):
#: longer texts are cut, shorter ones padded.
CONTEXT_LENGTH = 77

#: Tokens of that sequence left for text: minus BOS and EOS.
MAX_TEXT_TOKENS = CONTEXT_LENGTH - 2

#: Entries of CLIP's BPE vocabulary: the byte symbols, the merges, BOS and EOS.
VOCAB_SIZE = 49408


def find(haystack: Sequence[str], needle: Sequence[str], start: int = 0) -> int:
    """Index of the first occurrence of ``needle`` in ``haystack`` at or after ``start``, or −1."""
    n = len(needle)
    for i in range(max(start, 0), len(haystack) - n + 1):
        if list(haystack[i : i + n]) == list(needle):
            return i
    return -1


def phrase_positions(prompt: Sequence[str], prefix: Sequence[str], phrase: Sequence[str]) -> list[int]:
    """Positions (1-based, BOS = 0) of ``phrase`` in ``prompt`` when the prompt is prefix + phrase + rest.

    ``prompt``, ``prefix`` and ``phrase`` are token strings without BOS/EOS. The phrase is
    expected right after the prefix; when a BPE merge across the boundary moves it, it is
    searched for from the prefix's last token on. Template words before it never count, so a
    phrase starting with "a" is not found in "A good picture of a" (docs/method.md §12, R3).

    Raises ValueError when the phrase is empty or absent.
    """
    if not phrase:
        raise ValueError("the phrase has no tokens")
    start = len(prefix)
    if list(prompt[start : start + len(phrase)]) == list(phrase):
        return list(range(1 + start, 1 + start + len(phrase)))
    found = find(prompt, phrase, max(start - 1, 0))
    if found < 0:
        raise ValueError("the phrase's tokens do not follow the template in the prompt")
    return list(range(1 + found, 1 + found + len(phrase)))


def split_template(template: str) -> tuple[str, str]:
    """The text before and after ``{}``; a template without exactly one ``{}`` is an error."""
    if template.count("{}") != 1:
        raise ValueError(f"template {template!r} must contain {{}} exactly once")
    before, after = template.split("{}")
    return before, after


def bytes_to_unicode() -> dict[int, str]:
    """CLIP's (and GPT-2's) reversible map from bytes to printable characters used in BPE tokens."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars)))


_BYTE_CHARS = bytes_to_unicode()
# CLIP's pre-tokeniser: contractions, letter runs, single digits, punctuation runs.
_PRETOKEN = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|[^\s\w]+|_+")
_END = "</w>"


def words_of(text: str) -> list[str]:
    """The words CLIP's tokenizer cuts ``text`` into, spelled as its BPE tokens spell them."""
    cleaned = " ".join(text.split()).lower()
    return ["".join(_BYTE_CHARS[b] for b in w.encode("utf-8")) for w in _PRETOKEN.findall(cleaned)]


def token_words(tokens: Sequence[str]) -> list[tuple[str, list[int]]]:
    """Group BPE token strings into words (a word ends with a token ending in ``</w>``)."""
    words: list[tuple[str, list[int]]] = []
    text, members = "", []
    for i, tok in enumerate(tokens):
        members.append(i)
        if tok.endswith(_END):
            words.append((text + tok[: -len(_END)], members))
            text, members = "", []
        else:
            text += tok
    if members:
        words.append((text, members))
    return words


def locate_words(tokens: Sequence[str], phrase: str) -> list[int]:
    """Indices into ``tokens`` of the first run of words equal to ``phrase``'s words.

    Lets a recorded prompt be searched for another phrase without its tokenizer. Raises
    ValueError when the phrase is empty or not in the prompt.
    """
    target = words_of(phrase)
    if not target:
        raise ValueError("the phrase has no words")
    words = token_words(tokens)
    at = find([w for w, _ in words], target)
    if at < 0:
        raise ValueError("the phrase is not in the prompt")
    return [i for _, members in words[at : at + len(target)] for i in members]
