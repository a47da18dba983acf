"""Span parsing of the structured answer: tags with odd whitespace, missing tags, bad scores, token spans."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guardrail.responses import (
    char_offsets_from_prefixes,
    char_span_to_token_span,
    parse_boxed,
    parse_response,
    token_char_offsets,
)

STRUCTURED = (
    "<think><vision>a red circle</vision><reasoning>red is warm</reasoning></think>"
    " The answer is \\boxed{red}. <analysis>fine</analysis>"
    "<confidence><vision_confidence>8</vision_confidence><reasoning_confidence>6</reasoning_confidence></confidence>"
)


def _body(text: str, span: tuple[int, int] | None) -> str | None:
    return None if span is None else text[span[0] : span[1]]


def test_full_structured_answer() -> None:
    parsed = parse_response(STRUCTURED)
    assert parsed.perception_text == "a red circle"
    assert _body(STRUCTURED, parsed.reasoning) == "red is warm"
    assert parsed.answer_text == "red"
    assert parsed.vision_confidence == 0.8
    assert parsed.reasoning_confidence == 0.6
    assert parsed.has_vision_tag
    assert parsed.has_reasoning_tag
    assert parsed.problems == ()


def test_whitespace_around_brackets_and_slashes_is_tolerated() -> None:
    text = (
        "< vision >blue square< / vision >\n<reasoning >so blue</ reasoning>\\boxed{ blue }"
        "< vision_confidence > 10 </vision_confidence ><REASONING_CONFIDENCE>0< /reasoning_confidence>"
    )
    parsed = parse_response(text)
    assert parsed.perception_text == "blue square"
    assert _body(text, parsed.reasoning) == "so blue"
    assert parsed.answer_text == "blue"
    assert parsed.vision_confidence == 1.0
    assert parsed.reasoning_confidence == 0.0
    assert parsed.problems == ()


def test_missing_tags_make_the_whole_response_both_spans() -> None:
    text = "It is a green triangle."
    parsed = parse_response(text)
    assert parsed.vision == parsed.reasoning == (0, len(text))
    assert parsed.answer is None
    assert parsed.answer_text is None
    assert parsed.vision_confidence is None
    assert parsed.reasoning_confidence is None
    assert not parsed.has_vision_tag
    assert not parsed.has_reasoning_tag
    assert parsed.problems == ()


@pytest.mark.parametrize(
    ("score", "problem"),
    [
        ("11", "vision_confidence 11 is out of range 0..10"),
        ("-1", "vision_confidence -1 is out of range 0..10"),
        ("7.5", "vision_confidence '7.5' is not an integer 0..10"),
        ("high", "vision_confidence 'high' is not an integer 0..10"),
        ("", "vision_confidence '' is not an integer 0..10"),
    ],
)
def test_bad_scores_are_absent_and_recorded_never_clipped(score: str, problem: str) -> None:
    text = f"<vision_confidence>{score}</vision_confidence><reasoning_confidence>7</reasoning_confidence>"
    parsed = parse_response(text)
    assert parsed.vision_confidence is None
    assert parsed.reasoning_confidence == 0.7
    assert len(parsed.problems) == 1
    assert parsed.problems[0].startswith(problem)


def test_unclosed_vision_tag_falls_back_and_is_recorded() -> None:
    text = "<vision>a cat but the model stopped"
    parsed = parse_response(text)
    assert parsed.vision == (0, len(text))
    assert not parsed.has_vision_tag
    assert parsed.problems == ("<vision> is never closed; the whole response serves as the vision span",)


def test_boxed_takes_the_last_and_balances_braces() -> None:
    text = r"first \boxed{1} then \boxed{\frac{1}{2}} end"
    assert _body(text, parse_boxed(text)) == r"\frac{1}{2}"
    assert parse_boxed(r"\boxed{never closed") is None
    assert parse_boxed("no box") is None


def test_char_offsets_from_prefixes_are_monotone() -> None:
    # the 3rd prefix decodes shorter (a partial UTF-8 character) than the 2nd
    assert char_offsets_from_prefixes([1, 3, 2, 3, 3]) == [(0, 1), (1, 3), (3, 3), (3, 3), (3, 3)]


def test_token_char_offsets_by_prefix_decoding() -> None:
    pieces = ["Hel", "lo", "", " wor", "ld"]  # the empty piece is a special token that decodes to nothing

    def decode_batch(batch: list[list[int]]) -> list[str]:
        return ["".join(pieces[i] for i in ids) for ids in batch]

    offsets = token_char_offsets(decode_batch, [0, 1, 2, 3, 4])
    assert offsets == [(0, 3), (3, 5), (5, 5), (5, 9), (9, 11)]
    assert token_char_offsets(decode_batch, []) == []


def test_char_span_to_token_span_overlap_rule() -> None:
    offsets = [(0, 3), (3, 5), (5, 5), (5, 9), (9, 11)]
    assert char_span_to_token_span((0, 11), offsets) == (0, 5)
    assert char_span_to_token_span((4, 6), offsets) == (1, 4)  # partial overlaps count
    assert char_span_to_token_span((5, 5), offsets) is None  # empty span, zero-width token
    assert char_span_to_token_span((11, 11), offsets) is None


@settings(deadline=None)  # a shared, loaded CPU must not turn timing into failures
@given(st.lists(st.text(max_size=3), max_size=12), st.integers(0, 40), st.integers(0, 40))
def test_token_span_matches_brute_force_overlap(pieces: list[str], a: int, b: int) -> None:
    def decode_batch(batch: list[list[int]]) -> list[str]:
        return ["".join(pieces[i] for i in ids) for ids in batch]

    offsets = token_char_offsets(decode_batch, list(range(len(pieces))))
    start, end = min(a, b), max(a, b)
    hits = [k for k, (lo, hi) in enumerate(offsets) if lo < end and hi > start]
    expected = (hits[0], hits[-1] + 1) if hits else None
    assert char_span_to_token_span((start, end), offsets) == expected


@settings(deadline=None)
@given(st.text(alphabet=st.sampled_from(list("<>/ \\{}abvisonreagcft_0123456789")), max_size=80))
def test_parse_response_never_raises_and_spans_are_in_bounds(text: str) -> None:
    parsed = parse_response(text)
    for span in (parsed.vision, parsed.reasoning, parsed.answer):
        if span is not None:
            assert 0 <= span[0] <= span[1] <= len(text)
    for score in (parsed.vision_confidence, parsed.reasoning_confidence):
        assert score is None or 0.0 <= score <= 1.0
