"""A pipeline stage is reused only under the settings it ran with; a stale one is moved aside."""
import json

from agent_rl.train.stage_marks import MARK_FILE, changed_keys, claim_stage, settings_digest


def test_the_digest_ignores_key_order_and_sees_nested_values():
    assert settings_digest({"a": 1, "b": {"c": 2}}) == settings_digest({"b": {"c": 2}, "a": 1})
    assert settings_digest({"a": 1, "b": {"c": 2}}) != settings_digest({"a": 1, "b": {"c": 3}})
    assert changed_keys({"a": 1, "b": {"c": 2, "d": 1}}, {"a": 1, "b": {"c": 3, "d": 1}, "e": 0}) == ["b.c", "e"]


def test_same_settings_keep_the_stage_and_changed_ones_move_it_aside(tmp_path):
    said = []
    stage = tmp_path / "sft"
    first = claim_stage(stage, {"lr": 1e-4, "steps": 3}, said.append)
    (stage / "checkpoint").write_text("work")
    assert claim_stage(stage, {"steps": 3, "lr": 1e-4}, said.append) == first
    assert (stage / "checkpoint").read_text() == "work" and said == []

    second = claim_stage(stage, {"lr": 2e-4, "steps": 3}, said.append)
    assert second != first and not (stage / "checkpoint").exists()
    assert (tmp_path / f"sft.stale-{first}" / "checkpoint").read_text() == "work"  # kept, not deleted
    assert said == [f"sft: settings changed since it ran (lr); the old run is kept in sft.stale-{first}, "
                    "this stage starts again"]
    assert json.loads((stage / MARK_FILE).read_text())["digest"] == second

    # Back to the first settings: the second run is moved aside too, under its own digest.
    (stage / "checkpoint").write_text("second")
    claim_stage(stage, {"lr": 1e-4, "steps": 3}, said.append)
    assert (tmp_path / f"sft.stale-{second}" / "checkpoint").read_text() == "second"


def test_an_unmarked_stage_with_content_is_of_unknown_settings(tmp_path):
    stage = tmp_path / "rl"
    stage.mkdir()
    (stage / "metrics.jsonl").write_text("{}\n")
    said = []
    claim_stage(stage, {"lr": 1}, said.append)
    assert "no record of them" in said[0] and (tmp_path / "rl.stale-unmarked" / "metrics.jsonl").exists()
    # An empty directory (a run killed before its first write) is simply claimed.
    empty = tmp_path / "demos"
    empty.mkdir()
    claim_stage(empty, {"x": 1}, said.append)
    assert len(said) == 1 and (empty / MARK_FILE).exists()


def test_a_torn_mark_counts_as_unknown_settings(tmp_path):
    stage = tmp_path / "demos"
    stage.mkdir()
    (stage / MARK_FILE).write_text('{"digest": "ab')
    said = []
    claim_stage(stage, {"x": 1}, said.append)
    assert (tmp_path / "demos.stale-unmarked" / MARK_FILE).exists() and said
