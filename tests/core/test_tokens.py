"""Where the class phrase sits in the prompt's tokens (docs/method.md §1, "Target positions")."""

from __future__ import annotations

import pytest

from ovdiff_cli.core import tokens as tok
from ovdiff_cli.models.tokenizer import clip_tokenizer

_TOKENIZER = clip_tokenizer()


def bpe(text: str) -> list[str]:
    """The real CLIP BPE tokens of ``text`` without BOS/EOS."""
    return _TOKENIZER.convert_ids_to_tokens(_TOKENIZER(text, add_special_tokens=False).input_ids)


def positions(template: str, phrase: str) -> list[int]:
    before, after = tok.split_template(template)
    return tok.phrase_positions(bpe(before + phrase + after), bpe(before), bpe(phrase))


def test_one_token_phrase_after_the_default_template() -> None:
    # BOS = 0, "a good picture of a" = 1..5, so "cat" is position 6 (docs/method.md §1).
    assert positions("A good picture of a {}", "cat") == [6]


def test_multi_token_phrases_keep_every_position() -> None:
    assert positions("A good picture of a {}", "potted plant") == [6, 7]
    # one word cut into two BPE pieces: 'tv' + 'monitor</w>'
    assert bpe("tvmonitor") == ["tv", "monitor</w>"]
    assert positions("A good picture of a {}", "tvmonitor") == [6, 7]
    assert positions("A good picture of a {}", "donut with chocolate glaze") == [6, 7, 8, 9]


def test_other_templates_and_text_after_the_phrase() -> None:
    assert positions("A good photo of a {}", "dog") == [6]
    assert positions("{}", "dog") == [1]
    assert positions("{} in the wild", "sea lion") == [1, 2]
    assert positions("There is a {} on the table.", "cup") == [4]


def test_template_words_never_count_for_a_phrase_that_repeats_them() -> None:
    # docs/method.md §12 R3: "a dog" after "... of a" is positions 6, 7, not the template's "a" at 5.
    assert positions("A good picture of a {}", "a dog") == [6, 7]
    assert positions("A good picture of a {}", "good picture") == [6, 7]


def test_a_boundary_merge_that_destroys_the_phrase_is_an_error() -> None:
    # "photo" + "graph" tokenises as one word; the phrase's own tokens are not in the prompt.
    with pytest.raises(ValueError, match="do not follow the template"):
        positions("photo{}", "graph")


def test_empty_phrase_is_an_error() -> None:
    with pytest.raises(ValueError, match="no tokens"):
        tok.phrase_positions(["a</w>"], [], [])


@pytest.mark.parametrize("template", ["no placeholder", "{} and {}"])
def test_a_template_needs_exactly_one_placeholder(template: str) -> None:
    with pytest.raises(ValueError, match="exactly once"):
        tok.split_template(template)


def test_find() -> None:
    assert tok.find(list("abcabc"), list("bc")) == 1
    assert tok.find(list("abcabc"), list("bc"), start=2) == 4
    assert tok.find(list("abc"), list("cd")) == -1
    assert tok.find(list("ab"), list("abc")) == -1


@pytest.mark.parametrize("text", ["A good picture of a Café!!", "donut with chocolate glaze",
                                  "a cat's toy", "tvmonitor 42", "  crème   brûlée  "])
def test_words_of_spells_words_as_the_tokenizer_does(text: str) -> None:
    # second method: join the real tokenizer's BPE pieces back into words
    assert tok.words_of(text) == [w for w, _ in tok.token_words(bpe(text))]


def test_token_words_groups_pieces() -> None:
    assert tok.token_words(["a</w>", "tv", "monitor</w>", "x"]) == [("a", [0]), ("tvmonitor", [1, 2]), ("x", [3])]


def test_locate_words_finds_another_phrase_of_a_recorded_prompt() -> None:
    tokens = bpe("A good picture of a donut with chocolate glaze")
    assert tok.locate_words(tokens, "chocolate glaze") == [7, 8]
    assert tok.locate_words(tokens, "Chocolate  GLAZE") == [7, 8]
    assert tok.locate_words(bpe("A good picture of a tvmonitor"), "tvmonitor") == [5, 6]
    # the first run of the words: "a" of the template
    assert tok.locate_words(tokens, "a") == [0]
    with pytest.raises(ValueError, match="not in the prompt"):
        tok.locate_words(tokens, "sprinkles")
    with pytest.raises(ValueError, match="no words"):
        tok.locate_words(tokens, "  ")


def test_the_named_model_facts() -> None:
    # SD-1.5's text encoder and CLIP ViT-B/16 both read 77 tokens: BOS, 75 of text, EOS
    assert (tok.CONTEXT_LENGTH, tok.MAX_TEXT_TOKENS) == (77, 75)
    ids = _TOKENIZER("a cat", padding="max_length", max_length=tok.CONTEXT_LENGTH).input_ids
    assert len(ids) == 77 and ids[0] == 49406 and ids[-1] == 49407
    # 256 byte symbols, the same with </w>, 48,894 merges, BOS and EOS
    assert tok.VOCAB_SIZE == 256 * 2 + 48894 + 2 == len(_TOKENIZER)
