"""`agent-rl compare` on two evaluation directories written by the real report writer."""
from __future__ import annotations

import json

import pytest

from agent_rl.cli import main
from agent_rl.eval.evaluate import result_row
from agent_rl.eval.reports import ReportError, build_comparison, crossover_k, write_eval_reports


def _eval_dir(path, wins_per_task: dict[str, int], n: int = 8) -> str:
    rows = [
        result_row(task=t, sample=s, seed=s, resolved=s < wins)
        for t, wins in wins_per_task.items() for s in range(n)
    ]
    path.mkdir()
    write_eval_reports(str(path), rows, None, {"model": path.name, "tasks": "t"})
    return str(path)


def test_compare_overlays_curves_and_finds_the_catch_up_point(tmp_path, capsys) -> None:
    # "trained" solves task a often and never b; "base" solves both rarely: sharper at k=1,
    # broader at large k — the base catches up.
    trained = _eval_dir(tmp_path / "trained", {"a": 6, "b": 0})
    base = _eval_dir(tmp_path / "base", {"a": 1, "b": 1})
    out = tmp_path / "cmp"
    assert main(["compare", base, trained, "--out", str(out)]) == 0

    comp = json.loads((out / "compare.json").read_text())
    assert comp["baseline"] == "base" and comp["shared_ks"] == [1, 2, 4, 8]
    row1 = comp["table"][0]
    assert row1["trained - base"] == pytest.approx(row1["trained"] - row1["base"]) and row1["trained - base"] > 0
    assert comp["crossover_k"]["trained"] == 4  # base 0.125/0.25/0.5/1.0 vs trained 0.375/0.482/0.5/0.5
    assert (out / "pass_at_k_compare.png").read_bytes()[:4] == b"\x89PNG"
    assert "catches up with trained at k=4" in (out / "compare.md").read_text()
    assert "catches up" in capsys.readouterr().out


def test_crossover_edges_and_bad_dirs(tmp_path) -> None:
    assert crossover_k({1: 0.1, 2: 0.2}, {1: 0.5, 2: 0.6}) is None
    assert crossover_k({1: 0.5}, {1: 0.5}) == 1
    with pytest.raises(ReportError, match="no report.json"):
        build_comparison([str(tmp_path), str(tmp_path)])
    assert main(["compare", str(tmp_path), str(tmp_path), "--out", str(tmp_path / "o")]) == 2
