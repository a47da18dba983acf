"""``fetch_more_views``' ``mode``: its values, its default, and a wrong one reported at FILE:LINE:COL; mode ``tile``
with its merger and grid, and ``re_ask``'s ``keep_percept`` and ``samples``."""

from __future__ import annotations

import pytest

from guardrail.policy import builtin_policy_names, load_policy
from guardrail.types import Action
from tests.support.policy_text import VALID, problems


def test_mode_defaults_to_auto() -> None:
    assert load_policy(VALID).rules[0].params["mode"] == "auto"


@pytest.mark.parametrize("mode", ["auto", "append", "replace"])
def test_every_mode_loads(mode: str) -> None:
    text = VALID.replace("with: {views: 2}", f"with: {{views: 2, mode: {mode}}}")
    assert load_policy(text).rules[0].params == {"views": 2, "provider": "zoom", "mode": mode}


@pytest.mark.parametrize(
    ("value", "got"),
    [
        ("replce", "the string 'replce' (did you mean 'replace'?)"),
        ("swap", "the string 'swap'"),
        ("tiles", "the string 'tiles' (did you mean 'tile'?)"),
        ("3", "3"),
        ("null", "null"),
    ],
)
def test_a_wrong_mode_is_reported_where_it_is_written(value: str, got: str) -> None:
    text = VALID.replace("with: {views: 2}", f"with: {{views: 2, mode: {value}}}")
    assert problems(text) == [
        f"p.yaml:6:28: rules[0].with.mode: should be 'auto', 'append', 'replace' or 'tile', got {got}"
    ]


def test_a_wrong_mode_in_a_block_mapping_points_at_its_line() -> None:
    text = VALID.replace("with: {views: 2}", "with:\n      views: 2\n      mode: Replace")
    [problem] = problems(text)
    assert problem.startswith("p.yaml:8:13: rules[0].with.mode: should be 'auto', 'append', 'replace' or 'tile', got ")


def test_shipped_policies_leave_the_mode_at_auto_but_scenes_tiles() -> None:
    for name in builtin_policy_names():
        for rule in load_policy(name).rules:
            if rule.action is Action.FETCH_MORE_VIEWS:
                assert rule.params["mode"] == ("tile" if name == "scenes" else "auto"), name


# ---------------------------------------------------------------------------------------------------------------
# mode: tile


def test_tile_mode_loads_with_its_merger() -> None:
    text = VALID.replace("with: {views: 2}", "with: {views: 9, provider: tiles, mode: tile, merger: scenes}")
    assert load_policy(text).rules[0].params == {"views": 9, "provider": "tiles", "mode": "tile", "merger": "scenes"}


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ("{views: 4, mode: tile}", "mode: tile needs a merger (the percept merger's name, e.g. merger: scenes)"),
        ("{views: 2, mode: tile, merger: m}", "mode: tile needs views: 4, 9 or 16 (a square grid of tiles), got 2"),
        ("{views: 2, merger: m}", "merger is only for mode: tile (the mode is auto)"),
    ],
)
def test_a_tile_mode_mistake_is_reported_at_its_with(params: str, message: str) -> None:
    text = VALID.replace("with: {views: 2}", f"with: {params}")
    assert problems(text) == [f"p.yaml:6:11: rules[0].with: {message}"]


def test_an_empty_merger_name_is_refused() -> None:
    text = VALID.replace("with: {views: 2}", "with: {views: 4, mode: tile, merger: ''}")
    assert problems(text) == [
        "p.yaml:6:42: rules[0].with.merger: string should have at least 1 character, got the string ''"
    ]


# ---------------------------------------------------------------------------------------------------------------
# re_ask: keep_percept, samples

RE_ASK = VALID.replace("do: fetch_more_views\n    with: {views: 2}", "do: re_ask\n    with: {}")


def test_re_ask_keeps_no_percept_and_asks_once_by_default() -> None:
    assert load_policy(RE_ASK).rules[0].params == {"keep_percept": False, "samples": 1}


def test_self_consistency_on_the_own_percept_loads() -> None:
    text = RE_ASK.replace("with: {}", "with: {keep_percept: true, samples: 5, temperature: 0.7}")
    assert load_policy(text).rules[0].params == {"keep_percept": True, "samples": 5, "temperature": 0.7}


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            "{samples: 3}",
            "rules[0].with: samples: 3 needs a temperature > 0, got None: greedy samples would all be the same answer",
        ),
        (
            "{samples: 3, temperature: 0}",
            "rules[0].with: samples: 3 needs a temperature > 0, got 0.0: greedy samples would all be the same answer",
        ),
    ],
)
def test_greedy_samples_are_refused(params: str, message: str) -> None:
    assert problems(RE_ASK.replace("with: {}", f"with: {params}")) == [f"p.yaml:6:11: {message}"]


@pytest.mark.parametrize(
    ("params", "where"),
    [
        ("{samples: 0, temperature: 1.0}", "6:21: rules[0].with.samples: should be greater than or equal to 1, got 0"),
        ("{samples: 17, temperature: 1.0}", "6:21: rules[0].with.samples: should be less than or equal to 16, got 17"),
        ("{keep_percept: 1}", "6:26: rules[0].with.keep_percept: should be true or false, got 1"),
    ],
)
def test_a_wrong_re_ask_parameter_is_reported_where_it_is_written(params: str, where: str) -> None:
    [problem] = problems(RE_ASK.replace("with: {}", f"with: {params}"))
    assert problem.startswith(f"p.yaml:{where}")
