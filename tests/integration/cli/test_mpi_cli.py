"""``yilian mpi dedupe`` and ``yilian mpi link`` on CSV files: output, stability, errors.

No database: the bulk commands read a file and write a file. FEBRL dataset1 (1,000 records,
``rec-N-org`` and its duplicates ``rec-N-dup-k``: N is the person) is the ground truth.
"""

from __future__ import annotations

import csv
from itertools import combinations
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.support.paths import SHARED
from tests.support.terminal import run_on_terminal
from yilian.cli.main import app

FEBRL1 = SHARED / "record-linkage" / "febrl" / "dataset1.csv"
runner = CliRunner()

pytestmark = pytest.mark.skipif(not FEBRL1.is_file(), reason="FEBRL data not available")


def _pairs(groups: dict[str, list[str]]) -> set[tuple[str, str]]:
    out: set[tuple[str, str]] = set()
    for members in groups.values():
        out.update((a, b) if a < b else (b, a) for a, b in combinations(members, 2))
    return out


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def _mpi(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["mpi", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def test_dedupe_febrl1_finds_the_persons(tmp_path: Path) -> None:
    out = tmp_path / "clusters.csv"
    code, output = _mpi("dedupe", str(FEBRL1), "--columns", "febrl", "--out", str(out))
    assert code == 0, output
    rows = _read(out)
    assert list(rows[0]) == ["record_id", "cluster_id"]
    assert len(rows) == 1000
    found: dict[str, list[str]] = {}
    truth: dict[str, list[str]] = {}
    for row in rows:
        found.setdefault(row["cluster_id"], []).append(row["record_id"])
        truth.setdefault(row["record_id"].split("-")[1], []).append(row["record_id"])
    # The cluster id is the smallest record id of the cluster.
    assert all(cid == min(members) for cid, members in found.items())
    got, want = _pairs(found), _pairs(truth)
    tp = len(got & want)
    precision, recall = tp / len(got), tp / len(want)
    f1 = 2 * precision * recall / (precision + recall)
    assert f1 >= 0.97, (precision, recall)
    for label in ("records read", "pairs compared", "pairs certain", "persons (clusters)", "time"):
        assert label in output


def test_dedupe_gives_the_same_bytes_when_run_again(tmp_path: Path) -> None:
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    assert _mpi("dedupe", str(FEBRL1), "--columns", "febrl", "--out", str(first))[0] == 0
    assert _mpi("dedupe", str(FEBRL1), "--columns", "febrl", "--out", str(second))[0] == 0
    assert first.read_bytes() == second.read_bytes()


def test_dedupe_review_file_and_thresholds(tmp_path: Path) -> None:
    out, review = tmp_path / "c.csv", tmp_path / "review.csv"
    code, output = _mpi(
        "dedupe", str(FEBRL1), "-c", "febrl", "-o", str(out), "--review", str(review), "--certain", "0.999"
    )
    assert code == 0, output
    rows = _read(review)
    assert rows, "a stricter certain threshold leaves pairs to review"
    assert {r["grade"] for r in rows} <= {"probable", "possible"}
    # Scores below --certain are graded by probability; a rule (household guard) may cap a
    # higher one, so only the floor is the same for every row.
    assert all(float(r["score"]) >= 0.5 for r in rows)
    assert any(0.99 <= float(r["score"]) < 0.999 for r in rows), "0.99–0.999 is now below certain"


def test_a_model_learned_from_a_sample_runs_on_another_list(tmp_path: Path) -> None:
    """--model-out keeps the learned weights; --model runs them on a list without learning
    (the way a region learns on one machine and runs the steps on a cluster, docs/mpi.md)."""
    model, first, second = tmp_path / "model.json", tmp_path / "a.csv", tmp_path / "b.csv"
    code, output = _mpi("dedupe", str(FEBRL1), "-c", "febrl", "-o", str(first), "--model-out", str(model))
    assert code == 0, output
    assert '"format": "yilian-mpi-model"' in model.read_text(encoding="utf-8")
    code, output = _mpi("dedupe", str(FEBRL1), "-c", "febrl", "-o", str(second), "--model", str(model))
    assert code == 0, output
    assert first.read_bytes() == second.read_bytes()
    # A stricter model changes the result: the given weights are the ones used.
    strict = model.read_text(encoding="utf-8").replace('"certain": 0.99', '"certain": 0.999999')
    (tmp_path / "strict.json").write_text(strict, encoding="utf-8")
    third = tmp_path / "c.csv"
    assert (
        _mpi(
            "dedupe", str(FEBRL1), "-c", "febrl", "-o", str(third), "--model", str(tmp_path / "strict.json")
        )[0]
        == 0
    )
    assert third.read_bytes() != first.read_bytes()
    (tmp_path / "bad.json").write_text("{not json", encoding="utf-8")
    code, output = _mpi(
        "dedupe", str(FEBRL1), "-c", "febrl", "-o", str(third), "--model", str(tmp_path / "bad.json")
    )
    assert code == 2 and "bad.json is not a model file" in output, output
    code, output = _mpi(
        "dedupe", str(FEBRL1), "-c", "febrl", "-o", str(third), "--model", str(tmp_path / "none.json")
    )
    assert code == 2 and "cannot read the model" in output, output


def test_link_writes_pairs_with_score_and_grade(tmp_path: Path) -> None:
    originals, duplicates = tmp_path / "org.csv", tmp_path / "dup.csv"
    lines = FEBRL1.read_text(encoding="utf-8").splitlines(keepends=True)
    originals.write_text(lines[0] + "".join(x for x in lines[1:] if "-org," in x), encoding="utf-8")
    duplicates.write_text(lines[0] + "".join(x for x in lines[1:] if "-dup-" in x), encoding="utf-8")
    out = tmp_path / "pairs.csv"
    code, output = _mpi(
        "link", str(originals), str(duplicates), "--columns", "febrl", "--right-columns", "febrl",
        "--out", str(out), "--min-grade", "certain",
    )  # fmt: skip
    assert code == 0, output
    header = out.read_text(encoding="utf-8").splitlines()[0]
    assert header == "left_id,right_id,score,grade"
    rows = _read(out)
    assert rows and {r["grade"] for r in rows} == {"certain"}
    assert all(r["left_id"].endswith("-org") and "-dup-" in r["right_id"] for r in rows)
    right = [r["left_id"].split("-")[1] == r["right_id"].split("-")[1] for r in rows]
    assert sum(right) / len(right) >= 0.99
    assert len(rows) >= 480  # of 500 duplicates
    assert rows == sorted(rows, key=lambda r: (r["left_id"], -float(r["score"]), r["right_id"]))
    assert "links certain" in output
    # Run again, every grade this time, and again: the same bytes.
    every, again = tmp_path / "every.csv", tmp_path / "again.csv"
    for target in (every, again):
        code, output = _mpi(
            "link", str(originals), str(duplicates), "--columns", "febrl", "--out", str(target)
        )
        assert code == 0, output
    assert every.read_bytes() == again.read_bytes()
    assert {r["grade"] for r in _read(every)} > {"certain"}


# --- errors: one line, exit status 2, never a traceback ----------------------------------


def _error(*args: str) -> str:
    code, output = _mpi(*args)
    assert code == 2, output
    assert "Traceback" not in output
    assert "error:" in output
    return output


def test_missing_input_file(tmp_path: Path) -> None:
    out = _error("dedupe", str(tmp_path / "nope.csv"), "-c", "febrl", "-o", str(tmp_path / "o.csv"))
    assert "there is no file" in out and "nope.csv" in out


def test_missing_map_and_unknown_shipped_map(tmp_path: Path) -> None:
    out = _error("dedupe", str(FEBRL1), "-c", str(tmp_path / "map.yaml"), "-o", str(tmp_path / "o.csv"))
    assert "no column map file" in out
    out = _error("dedupe", str(FEBRL1), "-c", "nosuchmap", "-o", str(tmp_path / "o.csv"))
    assert "shipped: febrl" in out


def test_bad_yaml(tmp_path: Path) -> None:
    bad = tmp_path / "map.yaml"
    bad.write_text("record_id: [rec_id\nfamily_name: surname\n", encoding="utf-8")
    out = _error("dedupe", str(FEBRL1), "-c", str(bad), "-o", str(tmp_path / "o.csv"))
    assert "not valid YAML" in out


def test_unknown_key_in_the_map(tmp_path: Path) -> None:
    bad = tmp_path / "map.yaml"
    bad.write_text("record_id: rec_id\nsurname: surname\n", encoding="utf-8")
    out = _error("dedupe", str(FEBRL1), "-c", str(bad), "-o", str(tmp_path / "o.csv"))
    assert "unknown keys" in out and "surname" in out


def test_unknown_column_named_in_the_map(tmp_path: Path) -> None:
    bad = tmp_path / "map.yaml"
    bad.write_text(
        "csv: {skip_initial_space: true}\nrecord_id: rec_id\nfamily_name: family\nbirth_date: {column: dob}\n",
        encoding="utf-8",
    )
    out = _error("dedupe", str(FEBRL1), "-c", str(bad), "-o", str(tmp_path / "o.csv"))
    assert "'family' (family_name)" in out and "'dob' (birth_date)" in out
    assert "its columns are rec_id" in out


def test_bad_date_format(tmp_path: Path) -> None:
    not_a_date = tmp_path / "a.yaml"
    not_a_date.write_text(
        "record_id: rec_id\nbirth_date: {column: date_of_birth, format: '%H:%M'}\n", encoding="utf-8"
    )
    out = _error("dedupe", str(FEBRL1), "-c", str(not_a_date), "-o", str(tmp_path / "o.csv"))
    assert "birth_date format '%H:%M' is not a full date" in out

    wrong = tmp_path / "b.yaml"
    wrong.write_text(
        "csv: {skip_initial_space: true}\nrecord_id: rec_id\nbirth_date: {column: date_of_birth, format: '%d/%m/%Y'}\n",
        encoding="utf-8",
    )
    out = _error("dedupe", str(FEBRL1), "-c", str(wrong), "-o", str(tmp_path / "o.csv"))
    assert "reads none of the" in out and "date_of_birth" in out


def test_bad_thresholds_and_grade(tmp_path: Path) -> None:
    out = _error("dedupe", str(FEBRL1), "-c", "febrl", "-o", str(tmp_path / "o.csv"), "--possible", "0.95")
    assert "--possible ≤ --probable" in out
    out = _error(
        "link", str(FEBRL1), str(FEBRL1), "-c", "febrl", "-o", str(tmp_path / "o.csv"), "--min-grade", "maybe"
    )
    assert "--min-grade must be one of" in out


def test_output_folder_missing(tmp_path: Path) -> None:
    out = _error("dedupe", str(FEBRL1), "-c", "febrl", "-o", str(tmp_path / "no" / "o.csv"))
    assert "there is no folder" in out


def test_not_utf8(tmp_path: Path) -> None:
    data = tmp_path / "gbk.csv"
    data.write_bytes("id,姓名\nA1,张伟\n".encode("gb18030"))
    cmap = tmp_path / "m.yaml"
    cmap.write_text("record_id: id\nfull_name: 姓名\n", encoding="utf-8")
    out = _error("dedupe", str(data), "-c", str(cmap), "-o", str(tmp_path / "o.csv"))
    assert "not utf-8 text" in out and "gb18030" in out


def test_refused_rows_are_reported_and_the_rest_matched(tmp_path: Path) -> None:
    data = tmp_path / "list.csv"
    data.write_text(
        "id,姓名,出生日期,性别\n"
        "A1,张伟,1980-03-04,男\n"
        "A2,张伟,1980-03-04,男\n"
        ",李娜,1981-01-01,女\n"  # no record id
        "A1,王芳,1990-05-05,女\n"  # A1 again
        "A3,赵强,1970-01-01,男,extra\n"  # one field too many
        "A4,刘洋,1985-02-31,男\n",  # impossible date: kept without it
        encoding="utf-8",
    )
    cmap = tmp_path / "m.yaml"
    cmap.write_text("record_id: id\nfull_name: 姓名\nbirth_date: 出生日期\nsex: 性别\n", encoding="utf-8")
    out = tmp_path / "o.csv"
    code, output = _mpi("dedupe", str(data), "-c", str(cmap), "-o", str(out))
    assert code == 1, output  # some of the data failed, the rest was matched
    assert "line 4: refused: no record id" in output
    assert "line 5: refused: record id A1 again (first on line 2)" in output
    assert "line 6: refused: 5 fields, the header has 4" in output
    assert "record id seen before" in output and "wrong number of fields" in output
    assert "birth dates not readable" in output
    assert [r["record_id"] for r in _read(out)] == ["A1", "A2", "A4"]


def test_dedupe_shows_a_progress_bar_on_a_terminal(tmp_path: Path) -> None:
    """Run as an operator does, with stderr on a terminal: Rich draws the stages as they run and
    leaves each complete (done/total), and the summary table follows on stdout."""
    out = tmp_path / "persons.csv"
    run = run_on_terminal("mpi", "dedupe", str(FEBRL1), "-c", "febrl", "-o", str(out))
    assert run.returncode == 0, (run.stdout, run.drawn[-2000:])
    last = run.last_counts("comparing", "scoring", "clustering")
    assert set(last) == {"comparing", "scoring", "clustering"}, run.drawn[-2000:]
    assert all(done == total > 0 for done, total in last.values()), last
    assert "persons (clusters)" in run.stdout
    assert out.is_file() and len(_read(out)) == 1000
