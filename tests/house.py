"""Static checks of the repository's shape, used by tests/test_house.py (no project code is imported).

``import_cycles(root)``: circles among the project's modules (``src/diffparts``, ``flows``, ``tasks``),
from an ``ast`` read of every ``import`` / ``from ... import`` in each file, at module level AND
inside functions and methods (a deferred import still ties the two modules together; only
imports under ``if TYPE_CHECKING:`` are left out). An import of ``a.b`` counts as an edge to
``a.b`` only (its parent packages are not added: a package's ``__init__`` re-exporting its
modules is not a circle); ``from a.b import c`` is an edge to ``a.b.c`` when that is a module,
else to ``a.b``.

``dangling_references(root)``: document paths named in the repository's text files that do not
exist in it: any path-like word ending in ``.md`` (``docs/x.md``, ``data/.../README.md``,
``DESIGN.md``, ``../shared/STYLE.md``, an absolute path), resolved against the file's folder and
the repository root (placeholders such as ``<dir>/README.md``, ``{name}.md`` or ``*.md`` are
skipped); Markdown link targets in ``.md`` files (relative to the file, anchors cut);
section citations ``docs/design.md §N "Name"``, which must match a heading of that page; and
citations of a bare "DESIGN 5.3" / "DESIGN section 4".
A path that leaves the repository counts as dangling even where the file exists.

``long_files(root)``: ``.py`` files over ``LONG`` lines whose opening docstring or comment has no
line mentioning "``LONG`` lines" (the reason they are long).
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
from pathlib import Path

LONG = 450

#: Folders holding the project's modules, and the prefix of their module names.
PACKAGES = (("src/diffparts", "diffparts"), ("flows", "flows"), ("tasks", "tasks"))
#: Folders never scanned when the tree is walked (a git checkout lists its files with git instead,
#: which also leaves out what .gitignore names).
SKIP_DIRS = {".git", ".venv", "venv", ".prefect", "__pycache__", ".pytest_cache", "node_modules", ".mypy_cache",
             ".ruff_cache", "build", "dist"}
#: Text files scanned for document references.
TEXT_SUFFIXES = {".py", ".md", ".toml", ".yaml", ".yml", ".cfg", ".ini", ".sh"}
TEXT_NAMES = {"Makefile", "Dockerfile"}

_MD_PATH = re.compile(r"(?<![\w./~<>{}$*-])((?:\.{1,2}/|/|~/)?(?:[\w.<>{}$*-]+/)*[\w.<>{}$*-]*[\w-]\.md)(?![\w/-])")
#: Characters of a placeholder or pattern (``<model_dir>/README.md``, ``{name}.md``, ``docs/*.md``): not a path.
_PLACEHOLDER = re.compile(r"[<>{}$*]")
_MD_LINK = re.compile(r"\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_CITATION = re.compile(r"docs/design\.md\s*§\s*(\d+(?:\.\d+)*)\s*(?:\\?[\"“])([^\"”\\\n]+)(?:\\?[\"”])")
#: A citation of a design document by bare name ("DESIGN 5.3", "DESIGN section 4"): none is in the repository.
_BARE_DESIGN = re.compile(r"\bDESIGN(?:\s*§|\s+(?:section\s+)?\d)")
_HEADING = re.compile(r"^#{1,6}\s+(?:§\s*)?(\d+(?:\.\d+)*)\.?\s+(.+?)\s*#*\s*$", re.M)


# ------------------------------------------------------------------------------------------------
# Files


def repo_files(root: Path) -> list[Path]:
    """The repository's files (sorted): in a git checkout, the tracked and the untracked but not
    ignored ones (``git ls-files``); elsewhere every file, skipping ``SKIP_DIRS`` and hidden folders."""
    root = Path(root)
    if (root / ".git").exists():
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                                capture_output=True, check=True).stdout.decode().split("\0")
        out = {root / rel for rel in listed if rel}
        return sorted(p for p in out if p.is_file() and not SKIP_DIRS.intersection(p.relative_to(root).parts))
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
        out.extend(Path(dirpath) / name for name in filenames)
    return sorted(out)


def project_files(root: Path, suffixes=None, names=frozenset(), under: str | None = None) -> list[Path]:
    """``repo_files`` with one of ``suffixes`` (None: any) or one of ``names``, optionally under a folder."""
    root = Path(root)
    base = root / under if under else root
    return [p for p in repo_files(root)
            if (suffixes is None or p.suffix in suffixes or p.name in names) and (not under or base in p.parents)]


# ------------------------------------------------------------------------------------------------
# Import circles


def project_modules(root: Path) -> dict[str, Path]:
    """Module name -> file for every ``.py`` file of the project's packages."""
    root = Path(root)
    modules = {}
    for folder, prefix in PACKAGES:
        base = root / folder
        for path in project_files(root, {".py"}, under=folder):
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join([prefix, *parts])] = path
    return modules


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of the import nodes under ``if TYPE_CHECKING:`` (or ``typing.TYPE_CHECKING``)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else test.attr if isinstance(test, ast.Attribute) else None
            if name == "TYPE_CHECKING":
                for sub in node.body:
                    out.update(id(n) for n in ast.walk(sub))
    return out


def module_imports(name: str, path: Path, modules: dict[str, Path]) -> dict[str, int]:
    """Project modules imported by module ``name`` (module-level and function-level) -> first line."""
    tree = ast.parse(Path(path).read_text(encoding="utf-8"), filename=str(path))
    skip = _type_checking_nodes(tree)
    is_package = Path(path).name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    found: dict[str, int] = {}

    def add(target: str, line: int):
        if target in modules and target != name:
            found.setdefault(target, line)

    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)] if node.level > 1 else base
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                add(sub if sub in modules else target, node.lineno)
    return found


def import_graph(root: Path) -> dict[str, dict[str, int]]:
    modules = project_modules(root)
    return {name: module_imports(name, path, modules) for name, path in modules.items()}


def import_cycles(root: Path) -> list[list[str]]:
    """Every import circle, as a list of modules ``[a, b, ..., a]`` (one per strongly connected
    group of modules, through its smallest member); empty when there is none."""
    graph = import_graph(root)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    counter = [0]

    def visit(v: str):                                   # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    cycles = []
    for group in sorted(groups):
        members = set(group)
        start = group[0]
        # shortest way back to start inside the group (breadth first), for a readable message
        prev = {start: None}
        queue = [start]
        end = None
        while queue and end is None:
            v = queue.pop(0)
            for w in sorted(graph[v]):
                if w not in members:
                    continue
                if w == start:
                    end = v
                    break
                if w not in prev:
                    prev[w] = v
                    queue.append(w)
        path = [start]
        v = end
        while v is not None and v != start:
            path.append(v)
            v = prev[v]
        path = [start] + path[1:][::-1] + [start]
        cycles.append(path)
    return cycles


def describe_cycle(root: Path, cycle: list[str]) -> str:
    graph = import_graph(root)
    modules = project_modules(root)
    steps = []
    for a, b in zip(cycle, cycle[1:]):
        rel = modules[a].relative_to(root)
        steps.append(f"{a} ({rel}:{graph[a][b]}) imports {b}")
    return "; ".join(steps)


# ------------------------------------------------------------------------------------------------
# Document references


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def _resolve(ref: str, source: Path, root: Path, bare_from_root: bool) -> bool:
    """Whether ``ref`` names an existing file or folder inside the repository."""
    if ref.startswith(("/", "~")):
        path = Path(os.path.expanduser(ref))
        return _inside(path, root) and path.exists()
    candidates = [source.parent / ref]
    if bare_from_root and not ref.startswith("."):
        candidates.append(root / ref)
    return any(_inside(c, root) and c.exists() for c in candidates)


def design_sections(root: Path) -> dict[str, str] | None:
    """Section number -> heading name of docs/design.md (None when the page is missing)."""
    page = Path(root) / "docs" / "design.md"
    if not page.is_file():
        return None
    return {num: name.strip() for num, name in _HEADING.findall(page.read_text(encoding="utf-8"))}


def dangling_references(root: Path) -> list[str]:
    """``file:line: reason`` for every document reference that does not resolve in the repository."""
    root = Path(root)
    sections = design_sections(root)
    out = []
    for path in project_files(root, TEXT_SUFFIXES, TEXT_NAMES):
        if path.name in ("house.py", "test_house.py") and path.parent.name == "tests":
            continue                                # their examples of bad references are on purpose
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        rel = path.relative_to(root)
        for lineno, line in enumerate(text.splitlines(), start=1):
            refs = set(_MD_PATH.findall(line))
            if path.suffix == ".md":
                for target in _MD_LINK.findall(line):
                    if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("#"):
                        continue                    # a URL or an anchor on the same page
                    target = target.split("#", 1)[0]
                    if target and not _resolve(target, path, root, bare_from_root=False):
                        out.append(f"{rel}:{lineno}: link to {target!r}, which is not in the repository")
                    refs.discard(target)
            for ref in sorted(refs):
                if _PLACEHOLDER.search(ref):
                    continue
                if "://" in line and re.search(r"[a-z]+://\S*" + re.escape(ref), line):
                    continue                        # part of a URL
                if not _resolve(ref, path, root, bare_from_root=True):
                    out.append(f"{rel}:{lineno}: {ref!r} is not in the repository")
            if _BARE_DESIGN.search(line):
                out.append(f"{rel}:{lineno}: cites 'DESIGN' by bare name; cite docs/design.md §N \"Name\"")
            for num, name in _CITATION.findall(line):
                if sections is None:
                    continue                        # the missing page itself is reported above
                if sections.get(num) != name.strip():
                    have = sections.get(num)
                    why = f"its §{num} is {have!r}" if have else f"it has no §{num}"
                    out.append(f"{rel}:{lineno}: cites docs/design.md §{num} {name!r}, but {why}")
    return out


# ------------------------------------------------------------------------------------------------
# Long files


def opening_comment(text: str) -> str:
    """The module docstring, or else the leading ``#`` comment lines."""
    try:
        doc = ast.get_docstring(ast.parse(text))
    except SyntaxError:
        doc = None
    if doc:
        return doc
    lines = []
    for line in text.splitlines():
        if line.startswith("#"):
            lines.append(line)
        elif line.strip():
            break
    return "\n".join(lines)


def long_files(root: Path, limit: int = LONG) -> list[str]:
    """``file (N lines)`` for each ``.py`` file over ``limit`` lines without a reason in its
    opening comment (a line that mentions "``limit`` lines")."""
    root = Path(root)
    out = []
    reason = re.compile(rf"\b{limit}\s+lines\b")
    for path in project_files(root, {".py"}):
        text = path.read_text(encoding="utf-8")
        n = len(text.splitlines())
        if n > limit and not reason.search(opening_comment(text)):
            out.append(f"{path.relative_to(root)} ({n} lines)")
    return out
