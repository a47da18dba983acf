"""Reading policy YAML: syntax, encoding, duplicate keys, tags, aliases and sizes, each at FILE:LINE:COL."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from guardrail.errors import PolicyError
from guardrail.policy import check_policy_file, load_policy
from guardrail.policy._source import MAX_VALUES
from tests.support.policy_text import TOP_KEYS, VALID, problems


def test_yaml_syntax_error_points_at_the_spot() -> None:
    assert problems("version: 1\nname: [x\nrules: 3\n") == [
        "p.yaml:3:6: YAML syntax error: expected ',' or ']', but got ':' "
        "(while parsing a flow sequence started at line 2, column 7)"
    ]


def test_tab_indentation_is_a_syntax_error() -> None:
    assert problems("version: 1\nbudget:\n\tmax_attempts: 2\n") == [
        "p.yaml:3:1: YAML syntax error: found character '\\t' that cannot start any token"
    ]


@pytest.mark.parametrize("text", ["", "# only a comment\n", "\n   \n", "---\n# nothing\n", "~\n"])
def test_empty_files_are_refused(text: str) -> None:
    with pytest.raises(PolicyError) as info:
        load_policy(text.encode(), source="p.yaml")
    assert [p.format() for p in info.value.problems] == [
        "p.yaml:1:1: the file is empty (or only comments): a policy is a mapping"
    ]


def test_several_documents_are_refused() -> None:
    assert problems("version: 1\n---\nname: x\n") == [
        "p.yaml:2:1: YAML syntax error: but found another document "
        "(expected a single document in the stream started at line 1, column 1)"
    ]


def test_duplicate_keys_point_at_the_second_occurrence() -> None:
    text = """\
    version: 1
    name: a
    otherwise: accept
    rules:
      - when:
          visual: {below: 0.2}
          visual: {below: 0.9}
        do: abstain
    name: b
    """
    assert problems(text) == [
        "p.yaml:7:7: rules[0].when.visual: duplicate key 'visual' (first defined at line 6, column 7); "
        "each key may appear once",
        "p.yaml:9:1: name: duplicate key 'name' (first defined at line 2, column 1); each key may appear once",
    ]


def test_duplicate_keys_are_refused_not_last_wins_even_when_both_are_valid() -> None:
    with pytest.raises(PolicyError, match=r"p\.yaml:3:1: name: duplicate key 'name'"):
        load_policy("version: 1\nname: a\nname: b\notherwise: accept\n", source="p.yaml")


def test_non_utf8_bytes_give_the_position_of_the_first_bad_byte() -> None:
    raw = b"version: 1\nname: caf\xc3\xa9 \xff\xfe\notherwise: accept\n"
    assert problems(raw) == [
        "p.yaml:2:12: the file is not valid UTF-8: byte 0xff cannot be decoded (policies are UTF-8 text)"
    ]


def test_a_utf8_bom_is_accepted() -> None:
    assert load_policy(b"\xef\xbb\xbf" + VALID.encode()).name == "tiny"


def test_control_characters_are_refused_with_their_position() -> None:
    assert problems("version: 1\nname: a\x00b\n") == [
        "p.yaml:2:8: YAML syntax error: unacceptable character #x0000: special characters are not allowed"
    ]


PAYLOAD = '!!python/object/apply:os.mkdir ["{target}"]'


def test_python_tags_are_rejected_and_never_executed(tmp_path: Path) -> None:
    target = tmp_path / "pwned"
    text = f"version: 1\nname: {PAYLOAD.format(target=target)}\notherwise: accept\n"
    assert problems(text) == [
        "p.yaml:2:7: name: unsupported YAML tag '!!python/object/apply:os.mkdir': policies are plain YAML "
        "(mappings, lists, strings, numbers, booleans, null); tags are refused, never executed"
    ]
    assert not target.exists()


def test_the_payload_is_live_so_the_test_above_can_fail(tmp_path: Path) -> None:
    target = tmp_path / "pwned"
    yaml.unsafe_load(f"name: {PAYLOAD.format(target=target)}\n")  # what an unsafe loader would do
    assert target.is_dir()


@pytest.mark.parametrize(
    ("value", "tag"),
    [
        ("!!python/name:os.system", "!!python/name:os.system"),
        ("!!python/object:collections.OrderedDict {}", "!!python/object:collections.OrderedDict"),
        ("!env HOME", "!env"),
        ("!!binary aGVsbG8=", "!!binary"),
        ("!!set {a: null}", "!!set"),
    ],
)
def test_other_tags_are_rejected(value: str, tag: str) -> None:
    assert problems(f"version: 1\nname: {value}\notherwise: accept\n") == [
        f"p.yaml:2:7: name: unsupported YAML tag '{tag}': policies are plain YAML "
        "(mappings, lists, strings, numbers, booleans, null); tags are refused, never executed"
    ]


def test_alias_bombs_are_bounded() -> None:
    levels = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        levels.append(f"{name}: &{name} [{', '.join([f'*{prev}'] * 10)}]")  # 10**9 values when expanded
    started = time.perf_counter()
    found = problems("\n".join(levels) + "\n")
    assert time.perf_counter() - started < 5
    assert found == [
        f"p.yaml:4:1: the document expands to more than {MAX_VALUES} values (an alias bomb?); not read further"
    ]


def test_a_few_aliases_are_fine() -> None:
    text = VALID.replace("with: {views: 2}", "with: &zoom {views: 2}") + "on_error: {do: abstain}\n"
    assert load_policy(text).rules[0].params["views"] == 2


def test_recursive_aliases_are_refused() -> None:
    assert problems("version: 1\nname: x\notherwise: accept\ndescription: &d [1, *d]\n") == [
        "p.yaml:4:14: description: should be a string, got a list",
        "p.yaml:4:14: description[1]: recursive alias: this value contains itself",
    ]


def test_merge_keys_are_refused() -> None:
    text = "version: 1\nname: x\n<<: {otherwise: accept}\notherwise: accept\n"
    assert problems(text) == ["p.yaml:3:1: merge keys ('<<') are not supported in policies: write the keys out"]


def test_deep_nesting_is_refused_without_crashing() -> None:
    found = problems("version: 1\nname: x\notherwise: accept\ndescription: " + "[" * 200 + "]" * 200 + "\n")
    assert found[-1].startswith("p.yaml:4:")
    assert "nested more than 64 levels deep" in found[-1]


def test_yaml11_boolean_words_stay_keys() -> None:
    # YAML 1.1 reads `on:` as true; a policy reports the key as written.
    assert problems("version: 1\nname: x\notherwise: accept\non: abstain\n") == [
        f"p.yaml:4:1: on: unknown key; expected one of: {TOP_KEYS}"
    ]


def test_dates_are_kept_as_text() -> None:
    assert load_policy("version: 1\nname: 2024-01-01\notherwise: accept\n").name == "2024-01-01"


def test_oversized_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_bytes(b"# padding\n" * 120_000)
    assert [p.format() for p in check_policy_file(path)] == [
        f"{path}:1:1: the policy is larger than 1048576 bytes: a policy is a few dozen lines"
    ]
