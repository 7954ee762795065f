"""Previews of text: `first_words`, shared by the notifier's and the relay's timeline entries."""

from __future__ import annotations

from worker.domain.text import first_words


def test_first_words_returns_short_text_whole_but_collapsed() -> None:
    assert first_words("  Hello\n\n  world  ") == "Hello world"


def test_first_words_cuts_at_a_word_boundary_within_the_limit() -> None:
    text = "The quick brown fox jumps over the lazy dog"
    preview = first_words(text, limit=20)
    assert preview == "The quick brown fox…"
    assert len(preview) <= 20


def test_first_words_keeps_a_word_that_ends_exactly_at_the_limit() -> None:
    assert first_words("abcd efgh ijkl", limit=10) == "abcd efgh…"


def test_first_words_cuts_a_single_overlong_word() -> None:
    preview = first_words("x" * 500, limit=150)
    assert preview == "x" * 149 + "…"


def test_first_words_default_limit_is_150() -> None:
    """30 words of 4 letters and their spaces are 149 characters: with the ellipsis, exactly 150."""
    assert first_words("word " * 100) == " ".join(["word"] * 30) + "…"
