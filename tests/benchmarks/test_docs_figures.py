"""benchmarks/docs_figures.py: every table and picture of README.md and docs/results.md lies in
a block the command regenerates; a smoke run rewrites only its blocks; bad arguments and
markers write nothing; a failing section leaves its blocks as they were."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).parents[2]
SCRIPT = REPO / "benchmarks" / "docs_figures.py"
DOCS = ["README.md", "docs/results.md"]


@pytest.fixture(scope="module")
def figures():
    """benchmarks/docs_figures.py imported as a module (it is a script, not a package)."""
    spec = importlib.util.spec_from_file_location("docs_figures", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["docs_figures"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def root(tmp_path):
    """A copy of README.md, docs/results.md and docs/images/: what --root writes into."""
    copy = tmp_path / "root"
    (copy / "docs").mkdir(parents=True)
    shutil.copyfile(REPO / "README.md", copy / "README.md")
    shutil.copyfile(REPO / "docs" / "results.md", copy / "docs" / "results.md")
    shutil.copytree(REPO / "docs" / "images", copy / "docs" / "images")
    return copy


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def outside_blocks(text: str) -> str:
    """``text`` with every block's body removed (the markers kept)."""
    return re.sub(
        r"(<!-- docs_figures:([\w.-]+) -->).*?(<!-- /docs_figures:\2 -->)",
        r"\1\3",
        text,
        flags=re.S,
    )


@pytest.mark.parametrize("name", DOCS)
def test_every_table_and_picture_of_the_docs_is_in_a_regenerated_block(figures, name):
    text = (REPO / name).read_text()
    assert figures.uncovered(text) == []
    # and every block the registry promises is there
    figures.check_targets(REPO, list(figures.SECTIONS.values()))
    images = re.findall(r"!\[[^\]]*\]\(([^)]*)\)", text)
    assert images, "the check would pass vacuously"
    made = {n for s in figures.SECTIONS.values() for f, n in s.blocks if f == name}
    assert made, f"no section writes {name}"


def test_the_checker_finds_a_planted_table_a_planted_picture_and_a_stray_block(figures):
    good = (
        "text\n<!-- docs_figures:quickstart -->\n| a |\n|---|\n| 1 |\n![x](y.png)\n"
        "<!-- /docs_figures:quickstart -->\n"
    )
    assert figures.uncovered(good) == []
    planted = good + "\n| b |\n|---:|\n| 2 |\n"
    assert [p for p in figures.uncovered(planted)] == ["line 10: |---:|"]
    picture = good + "see ![z](z.png) here\n"
    assert len(figures.uncovered(picture)) == 1
    stray = good + "<!-- docs_figures:nothing -->\n<!-- /docs_figures:nothing -->\n"
    assert figures.uncovered(stray) == ["block 'nothing' belongs to no section"]


def test_a_smoke_run_rewrites_only_its_block_stamps_the_commit_and_links_real_pictures(
    figures, root, tmp_path, capsys
):
    before = snapshot(root)
    code = figures.main(
        ["--smoke", "--only", "quickstart", "--root", str(root), "--runs", str(tmp_path / "runs")]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "[quickstart] started" in out and "[quickstart] finished in" in out and "total" in out
    old, new = before["README.md"].decode(), (root / "README.md").read_text()
    assert new != old
    assert outside_blocks(new) == outside_blocks(old)  # the rest byte for byte
    assert (root / "docs" / "results.md").read_bytes() == before["docs/results.md"]
    body = new.split("<!-- docs_figures:quickstart -->")[1].split("<!-- /docs_figures:quickstart")[
        0
    ]
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    assert f"at commit {head}" in body and "SMOKE RUN" in body
    assert "mfm compare tomlconfigs/quickstart.toml coupler.name=exact,independent" in body
    assert re.search(r"\| `exact` \(BatchOT\) \| \d", body)
    links = re.findall(r"!\[[^\]]*\]\(([^)]*)\)", body)
    assert len(links) == 4
    for link in links:
        picture = root / link
        assert picture.is_file() and picture.read_bytes() != before.get(link), link
    # the run's own figure is the table's: read from its metrics.json, not typed
    metrics = next((tmp_path / "runs").rglob("exact/metrics.json"))
    w2 = figures.read_json(metrics)["samples"][0]["w2"]
    assert f"| `exact` (BatchOT) | {figures.num(w2, 3)} |" in body


def test_an_unknown_section_lists_the_known_ones_and_exits_2(figures, capsys):
    with pytest.raises(SystemExit) as raised:
        figures.main(["--only", "quickstart,nope"])
    assert raised.value.code == 2
    err = capsys.readouterr().err
    assert "'nope'" in err and "quickstart, paper-2d" in err


@pytest.mark.parametrize("fault", ["missing", "duplicated"])
def test_a_missing_or_duplicated_marker_is_one_error_and_nothing_is_written(
    figures, root, tmp_path, capsys, fault
):
    results = root / "docs" / "results.md"
    text = results.read_text()
    if fault == "missing":
        text = text.replace("<!-- /docs_figures:baselines -->\n", "")
    else:
        text += "\n<!-- docs_figures:baselines -->\n<!-- /docs_figures:baselines -->\n"
    results.write_text(text)
    before = snapshot(root)
    code = figures.main(["--smoke", "--root", str(root), "--runs", str(tmp_path / "runs")])
    captured = capsys.readouterr()
    assert code == 2
    assert str(results) in captured.err and "baselines" in captured.err
    assert "nothing was written" in captured.err
    assert snapshot(root) == before
    assert not (tmp_path / "runs").exists()  # nothing ran


def test_a_failing_section_leaves_its_blocks_and_exits_non_zero_naming_it(
    figures, root, tmp_path, capsys, monkeypatch
):
    def broken(ctx):
        ctx.run(["mfm-run", "broken"], [sys.executable, "-c", "raise SystemExit(3)"])
        return {}

    monkeypatch.setitem(
        figures.SECTIONS,
        "quickstart",
        figures.Section("quickstart", "broken", figures.SECTIONS["quickstart"].blocks, broken),
    )
    before = snapshot(root)
    code = figures.main(
        ["--smoke", "--only", "quickstart", "--root", str(root), "--runs", str(tmp_path / "runs")]
    )
    captured = capsys.readouterr()
    assert code == 1
    assert "[quickstart] FAILED" in captured.out and "mfm-run broken" in captured.out
    log = next((tmp_path / "runs").rglob("quickstart/log.txt"))
    assert str(log) in captured.out
    assert "quickstart" in captured.err
    assert snapshot(root) == before


def test_torchcfm_without_its_python_is_skipped_and_keeps_its_old_stamp(
    figures, root, tmp_path, capsys
):
    before = snapshot(root)
    code = figures.main(
        ["--smoke", "--only", "torchcfm", "--root", str(root), "--runs", str(tmp_path / "runs")]
    )
    assert code == 0
    assert "[torchcfm] SKIPPED" in capsys.readouterr().out
    assert snapshot(root) == before


def test_writes_replace_only_the_named_blocks(figures):
    text = (
        "a\n<!-- docs_figures:x -->\nold\n<!-- /docs_figures:x -->\n"
        "b\n<!-- docs_figures:y -->\nkeep\n<!-- /docs_figures:y -->\n"
    )
    new = figures.replace_blocks(text, {"x": "new"}, "t")
    assert new == text.replace("old", "new")
