"""Sweep specs: the paper's tables row for row, validation errors, fuzzing."""
import json
import re
import textwrap

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reproduce.errors import UserError
from reproduce.sweep.spec import SWEEPS_DIR, available_tables, load_table_file, load_tables, parse_table

# The paper's tables as printed: (row label, AP) in order.
PAPER_AP = {
    "table1": [36.5, 38.6, 38.3, 31.8, 40.4, 40.3, 40.6, 40.5, 40.4, 38.5],
    "table2": [40.3, 40.6, 40.4],
    "table3": [40.1, 39.9, 40.6],
    "table4": [40.4, 40.6, 40.6, 40.2],
    "table5": [40.4, 40.4, 39.9, 40.6, 40.6, 40.9, 40.8, 40.3],
    "table6": [41.5, 43.1, 43.5, 43.6, 43.6, 44.5, 44.8, 44.8, 46.0, 46.3, 47.4, 47.4],
    "soft_hard": [40.6, 40.0],
}


def test_every_table_has_a_spec():
    assert available_tables() == sorted(["table1", "table2", "table3", "table4", "table5", "table6", "table7",
                                         "soft_hard"])


@pytest.mark.parametrize("name", sorted(PAPER_AP))
def test_rows_match_the_paper(name):
    (table,) = load_tables(name)
    assert [r.paper["AP"] for r in table.rows] == PAPER_AP[name]


def test_table1_switches():
    (t,) = load_tables("table1")
    by = {r.name: r for r in t.rows}
    assert by["fcos"].method == "fcos" and by["fcospp"].method == "fcospp"
    # "the same weights for each head": one temperature for both (docs/readings.md, reading 3)
    assert by["v-p"].switches == {"criteria": "cls", "tau_ratio": 1.0}
    assert by["v-q"].switches == {"criteria": "reg", "tau_ratio": 1.0}
    assert by["alpha-1/3"].switches["alpha"] == pytest.approx(1 / 3)
    assert by["alpha-0"].switches["alpha"] == 0.0
    assert by["alpha-1/6"].label == "$\\alpha = 1/6$"
    assert by["v-q"].paper == {"AP": 31.8, "AP50": 49.9, "AP75": 33.7, "APs": 15.0, "APm": 34.9, "APl": 45.2}


def test_table5_and_7_and_6():
    (t5,) = load_tables("table5")
    assert [(r.switches["alpha"], r.switches["num_anchors"]) for r in t5.rows] == \
        [(1.0, 1), (1.0, 2), (1.0, 3)] + [(pytest.approx(1 / 3), a) for a in range(1, 6)]
    (t7,) = load_tables("table7")
    assert [r.paper["flops"] for r in t7.rows] == [205.3, 205.3, 209.5, 213.7, 217.8, 222.0]
    assert [r.paper["params"] for r in t7.rows] == [32.07, 32.07, 32.27, 32.46, 32.66, 32.85]
    assert [r.paper["fps"] for r in t7.rows] == [14.6, 14.6, 13.2, 12.5, 11.7, 11.0]
    (t6,) = load_tables("table6")
    trained = [r.name for r in t6.rows if r.trained]
    assert trained == ["musu-r101", "musu-r101-dcn"]
    assert all(r.switches == {"num_anchors": 3} for r in t6.rows if r.trained)
    (t3,) = load_tables("table3")
    assert [r.switches.get("tau_cls") for r in t3.rows] == [10.0, 5.0, None]


def _err(tmp_path, text, name="t.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    with pytest.raises(UserError) as info:
        load_table_file(path)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def test_error_messages_name_file_row_and_field(tmp_path):
    base = "table: t\ncolumns: [AP]\nrows:\n"
    msg = _err(tmp_path, base + "  - {name: a, set: {alpha: 1.5}}\n")
    assert "t.yaml" in msg and "row a" in msg and "set.alpha" in msg and "[0.0, 1.0]" in msg
    msg = _err(tmp_path, base + "  - {name: a, set: {b: 1.0}}\n")
    assert "set.b" in msg and "(0.0, 1.0)" in msg
    msg = _err(tmp_path, base + "  - {name: a, set: {num_anchors: 0}}\n")
    assert "set.num_anchors" in msg
    msg = _err(tmp_path, base + "  - {name: a, colour: red}\n")
    assert "unknown field" in msg and "colour" in msg
    msg = _err(tmp_path, base + "  - {name: a}\n  - {name: a}\n")
    assert "duplicate row name" in msg
    msg = _err(tmp_path, base + "  - {name: a, set: {alpha: [1]}}\n")
    assert "set.alpha" in msg
    msg = _err(tmp_path, base + "  - {name: a, paper: {AP: fast}}\n")
    assert "paper.AP" in msg
    msg = _err(tmp_path, base + "  - {name: a, method: fcos, set: {alpha: 0.5}}\n")
    assert "musu only" in msg
    msg = _err(tmp_path, base + "  - {name: 'a-{alpha}', grid: {alpha: [0, 1]}, paper: [{AP: 1}]}\n")
    assert "2 paper entries" in msg
    msg = _err(tmp_path, "table: t\ncolumns: [AP\n")
    assert "malformed YAML" in msg and "line" in msg
    msg = _err(tmp_path, base + "  - {name: a}\n", name="other.yaml")
    assert "other.yaml" in msg
    msg = _err(tmp_path, "table: t\neval_split: val\ncolumns: [AP]\nrows:\n  - {name: a}\n")
    assert "eval_split 'val'" in msg and "test-dev" in msg


def test_unknown_table():
    with pytest.raises(UserError, match="unknown table 'table9'.*known tables"):
        load_tables("table9")


def test_loading_never_executes_code(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "t.yaml"
    path.write_text(f"!!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(UserError, match="malformed YAML"):
        load_table_file(path)
    assert not marker.exists()


VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 10) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8) | st.sampled_from(["1/3", "musu", "fcos", "r50", "1x", "AP", "cls", "x/0"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["name", "set", "alpha", "b", "num_anchors", "paper", "AP", "grid", "zip", "method",
                         "label", "seeds", "reference", "train", "tau_cls", "hard", "backbone", "criteria"]),
        inner, max_size=5),
    max_leaves=20)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(VALUES, min_size=0, max_size=4), columns=VALUES | st.just(["AP"]))
def test_fuzz_every_input_is_a_plan_or_one_line_error(rows, columns):
    data = {"table": "t", "columns": columns, "rows": rows}
    try:
        table = parse_table(data, "fuzz.yaml")
    except UserError as exc:
        text = str(exc)
        assert "\n" not in text and text.startswith("fuzz.yaml")
        return
    assert all(isinstance(r.name, str) for r in table.rows)
    json.dumps([r.switches for r in table.rows])


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=200))
def test_fuzz_raw_yaml_text(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("fz") / "t.yaml"
    path.write_text(text)
    try:
        load_table_file(path)
    except UserError as exc:
        assert "\n" not in str(exc)


def test_the_readings_documents_spec_plans():
    """docs/readings.md's spec for reading 3 is a valid spec whose rows set the other reading."""
    import re

    import yaml
    text = (SWEEPS_DIR.parent / "docs" / "readings.md").read_text()
    (block,) = re.findall(r"```yaml\n(.*?)```", text, re.S)
    table = parse_table(yaml.safe_load(block), "docs/readings.md")
    assert [r.switches for r in table.rows] == [dict(criteria="cls", tau_ratio=2.0), dict(criteria="reg", tau_ratio=2.0)]
