"""yamlpos: values with their lines, YAML problems with file:line."""

from __future__ import annotations

from manifest_helpers import dedent

from orch.manifests.yamlpos import MAX_NODES, Mark, PosDict, PosList, parse_documents


def test_marks_and_raw_text_of_keys_values_and_items() -> None:
    text = dedent(
        """
        # comment
        a: 1
        b:
          - x
          - 0800
        user: 1000:1000
        on: yes
        """
    )
    [doc], problems = parse_documents(text, "f.yaml")
    assert problems == []
    root = doc.root
    assert isinstance(root, PosDict) and doc.mark == Mark(2, 1)
    assert root.key_marks["a"] == Mark(2, 1) and root.value_marks["a"] == Mark(2, 4)
    assert root["a"] == 1 and root.raws["a"] == "1"
    items = root["b"]
    assert isinstance(items, PosList) and items.item_marks == [Mark(4, 5), Mark(5, 5)]
    assert items.raws == ["x", "0800"] and root.raws["b"] is None
    assert root.raws["user"] == "1000:1000"  # YAML 1.1 reads it as a base-60 int
    assert root["on"] is True  # values are constructed; keys stay strings


def test_multiple_documents_skip_empty_ones() -> None:
    text = "---\n# only a comment\n---\na: 1\n---\n---\nb: 2\n"
    docs, problems = parse_documents(text, "f.yaml")
    assert problems == []
    assert [d.root for d in docs] == [{"a": 1}, {"b": 2}]
    assert [d.mark.line for d in docs] == [4, 7]


def test_syntax_error_names_file_line_and_column() -> None:
    text = "a: 1\nb:\n  c: [1, 2\n  d: 3\n"
    docs, problems = parse_documents(text, "web.yaml")
    assert docs == []
    [problem] = problems
    assert str(problem).startswith("web.yaml:4:4: YAML syntax error: ")
    assert (problem.line, problem.column) == (4, 4)


def test_syntax_error_after_a_good_document_keeps_the_good_one() -> None:
    docs, problems = parse_documents("a: 1\n---\nb: [\n", "f.yaml")
    assert [d.root for d in docs] == [{"a": 1}]
    assert len(problems) == 1 and "YAML syntax error" in str(problems[0])


def test_duplicate_key_is_a_problem_naming_both_lines() -> None:
    text = "spec:\n  image: a\n  replicas: 1\n  image: b\n"
    [doc], problems = parse_documents(text, "f.yaml")
    assert [str(p) for p in problems] == ["f.yaml:4: spec.image: duplicate key (first at line 2)"]
    assert doc.root["spec"]["image"] == "a"


def test_anchors_aliases_and_merge_keys() -> None:
    text = dedent(
        """
        base: &base {cpus: 1, memory: 64Mi}
        limits:
          <<: *base
          cpus: 2
        """
    )
    [doc], problems = parse_documents(text, "f.yaml")
    assert problems == []
    limits = doc.root["limits"]
    assert limits == {"cpus": 2, "memory": "64Mi"}
    assert limits.key_marks["cpus"].line == 4  # the key written here wins
    assert limits.key_marks["memory"].line == 1  # a merged key points where it is written


def test_recursive_alias_is_reported_not_followed() -> None:
    _, problems = parse_documents("a: &x\n  b: *x\n", "f.yaml")
    assert [str(p) for p in problems] == [
        "f.yaml:1: a.b: an alias refers to a node that contains it"
    ]


def test_alias_bomb_is_refused() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 7):
        refs = ", ".join([f"*a{i - 1}"] * 10)
        lines.append(f"a{i}: &a{i} [{refs}]")
    docs, problems = parse_documents("\n".join(lines) + "\n", "f.yaml")
    assert docs == []
    assert f"more than {MAX_NODES}" in str(problems[0])


def test_unknown_tag_and_complex_key_are_problems() -> None:
    _, problems = parse_documents("a: !weird 1\n? [1, 2]\n: x\n", "f.yaml")
    text = [str(p) for p in problems]
    assert text[0].startswith("f.yaml:1: a: YAML error: could not determine a constructor")
    assert text[1] == "f.yaml:2: mapping keys must be plain strings"
