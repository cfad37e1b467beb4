"""The result line and its files."""

from __future__ import annotations

import csv
import json

import pytest

from digitscan.errors import ConfigError
from digitscan.worker.results import RESULT_FIELDS, check_results_path, result_line, write_result_file

LINES = [result_line("j", 0, "a.png", "m", digit=7, confidence=0.99),
         result_line("j", 1, 'odd "name", with comma.png', "m", error="corrupt image: empty file")]


def test_jsonl_has_the_schema_in_order_without_the_index(tmp_path):
    out = tmp_path / "sub" / "r.jsonl"
    assert write_result_file(LINES, out) == 2
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [list(r) for r in rows] == [list(RESULT_FIELDS)] * 2
    assert rows[0]["digit"] == 7 and rows[1]["error"] == "corrupt image: empty file"


def test_csv_round_trips_awkward_names(tmp_path):
    out = tmp_path / "r.csv"
    write_result_file(LINES, out)
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(RESULT_FIELDS)
    assert rows[1]["source"] == 'odd "name", with comma.png' and rows[1]["digit"] == ""


def test_a_failure_mid_write_keeps_the_old_file_and_leaves_no_part(tmp_path):
    out = tmp_path / "r.jsonl"
    out.write_text("previous\n")

    def broken():
        yield LINES[0]
        raise RuntimeError("Redis went away")

    with pytest.raises(RuntimeError):
        write_result_file(broken(), out)
    assert out.read_text() == "previous\n" and list(tmp_path.iterdir()) == [out]


@pytest.mark.parametrize("name", ["r.txt", "r", "r.json"])
def test_unknown_formats_are_refused_by_name(name):
    with pytest.raises(ConfigError, match=f"--out {name} must end in .jsonl or .csv"):
        check_results_path(name)
