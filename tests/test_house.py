"""The repository keeps its shape: no import circle among the project's modules, no reference to a
document that is not in the repository, no file over 450 lines without saying why.

What each check reads is in tests/house.py (static: ``ast`` and text, no project code imported).
The circles checked are among ``src/diffparts``, ``flows`` and ``tasks``, counting imports at
module level and inside functions alike. The second half plants a circle, dangling references and
a long file in a temporary tree and checks that each is reported, so the checks can fail.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from tests.house import LONG, dangling_references, describe_cycle, import_cycles, long_files

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------
# The repository itself


def test_no_import_circle_among_the_project_modules():
    cycles = import_cycles(REPO)
    assert not cycles, "import circles:\n" + "\n".join(describe_cycle(REPO, c) for c in cycles)


def test_every_document_reference_exists_in_the_repository():
    missing = dangling_references(REPO)
    assert not missing, f"{len(missing)} dangling document references:\n" + "\n".join(missing[:40])


def test_no_file_over_the_limit_without_a_reason():
    long = long_files(REPO)
    assert not long, (f"files over {LONG} lines; split them by idea, or say why in a line of the opening "
                      f"docstring that mentions '{LONG} lines': " + ", ".join(long))


# ------------------------------------------------------------------------------------------------
# The checks bite (planted trees)


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))
    return root


def test_a_planted_circle_is_reported_even_through_a_function_level_import(tmp_path):
    root = _write(tmp_path, {
        "src/diffparts/__init__.py": "",
        "src/diffparts/lib/__init__.py": "from diffparts.lib.a import f\n",      # re-export: no circle
        "src/diffparts/lib/a.py": "from diffparts.lib import b\n\ndef f():\n    return b.g()\n",
        "src/diffparts/lib/b.py": "def g():\n    from .a import f  # deferred, still a circle\n    return f\n",
        "src/diffparts/lib/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                  "    from diffparts.lib.a import f\n",
        "tasks/__init__.py": "",
        "tasks/t.py": "from diffparts.lib.c import *\n",
        "flows/__init__.py": "",
        "flows/f.py": "import tasks.t\n",
    })
    cycles = import_cycles(root)
    assert cycles == [["diffparts.lib.a", "diffparts.lib.b", "diffparts.lib.a"]]
    text = describe_cycle(root, cycles[0])
    assert "src/diffparts/lib/b.py:2" in text and "src/diffparts/lib/a.py:1" in text

    # across layers: a task that imports a flow that imports it
    _write(root, {"tasks/t.py": "def run():\n    import flows.f\n"})
    assert ["flows.f", "tasks.t", "flows.f"] in import_cycles(root)

    # and none once the deferred import is gone
    _write(root, {"src/diffparts/lib/b.py": "def g():\n    return 1\n", "tasks/t.py": ""})
    assert import_cycles(root) == []


def test_planted_dangling_references_are_reported(tmp_path):
    design = "# Design\n\n## 3 Layers\n\ntext\n\n### 5.3 Random-walk NCut\n\ntext\n"
    outside = tmp_path / "shared"
    _write(outside, {"STYLE.md": "exists, but outside the repository\n"})
    root = _write(tmp_path / "repo", {
        "docs/design.md": design,
        "docs/parts.md": "See [the design](design.md#layers) and [gone](segment.md) and "
                         "[style](../../shared/STYLE.md) and [site](https://example.org/x.md).\n",
        "README.md": "Start at [docs/parts.md](docs/parts.md); the card is data/models/toy/README.md.\n",
        "src/diffparts/__init__.py": '"""Layers: docs/design.md §3 "Layers"; see DESIGN' + '.md section 3."""\n',
        "src/diffparts/cut.py": '"""NCut (docs/design.md §5.3 "Random-walk NCut"); DESIGN 5.3; docs/design.md §5.4 "Hierarchy";'
                                '\ndocs/design.md §3 "Stages"; a pattern: docs/*.md, <dir>/README.md."""\n',
        "flows/x.py": "# the stage page docs/occlusion.md and /work/shared/DESIGN" + ".md\n",
    })
    found = dangling_references(root)
    joined = "\n".join(found)
    expected = [
        "docs/parts.md:1: link to 'segment.md'",
        "docs/parts.md:1: link to '../../shared/STYLE.md'",              # exists, outside the repository
        "README.md:1: 'data/models/toy/README.md'",
        "src/diffparts/__init__.py:1: 'DESIGN.md'",
        "src/diffparts/cut.py:1: cites 'DESIGN' by bare name",
        "src/diffparts/cut.py:1: cites docs/design.md §5.4 'Hierarchy', but it has no §5.4",
        "src/diffparts/cut.py:2: cites docs/design.md §3 'Stages', but its §3 is 'Layers'",
        "flows/x.py:1: 'docs/occlusion.md'",
        "flows/x.py:1: '/work/shared/DESIGN.md'",
    ]
    for item in expected:
        assert item in joined, f"{item!r} not reported in:\n{joined}"
    assert len(found) == len(expected), joined
    for good in ("design.md#layers", "docs/parts.md'", "example.org", "Random-walk NCut", "*.md", "<dir>"):
        assert good not in joined

    # the page missing altogether: every citation of it is reported
    (root / "docs/design.md").unlink()
    gone = dangling_references(root)
    assert sum("'docs/design.md' is not in the repository" in x for x in gone) == 3   # one per line
    assert any("link to 'design.md'" in x for x in gone)


def test_a_planted_long_file_is_reported_unless_its_opening_comment_says_why(tmp_path):
    body = "x = 1\n" * LONG
    root = _write(tmp_path, {
        "src/diffparts/long.py": '"""A long module."""\n' + body,
        "src/diffparts/why.py": f'"""A long module.\n\nOver {LONG} lines on purpose: one table.\n"""\n' + body,
        "benchmarks/why_comment.py": f"# Over {LONG} lines: generated.\n" + body,
        "tasks/short.py": body,
    })
    assert long_files(root) == [f"src/diffparts/long.py ({LONG + 1} lines)"]


def test_the_library_never_imports_prefect():
    """The layers of docs/design.md §3 "Layers": only flows/ and tasks/ import Prefect."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "src" / "diffparts"
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            found += [f"{path.relative_to(root)}:{node.lineno}" for n in names
                      if n.split(".")[0] == "prefect" or (n.split(".")[0] in ("tasks",))]
    assert not found, "the library imports prefect or tasks: " + ", ".join(found)
