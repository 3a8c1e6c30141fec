"""The docs agree with the code: the parameter table, links, and the code they name.

docs/ros.md lists every lisa_node parameter as lisa_ros.runtime.parameters declares it.
Print the table with `.venv/bin/python tests/ros/test_docs.py`, or rewrite it in place
with `.venv/bin/python tests/ros/test_docs.py --write`.
"""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from lisa_ros.runtime.parameters import PARAMETERS  # noqa: E402

ROS_DOCS = ROOT / "docs" / "ros.md"
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TABLE_HEADER = "| parameter | type | default | allowed | description |"
# Top-level folders whose paths the docs name in `code`; each such path must exist.
REPOSITORY_FOLDERS = ("lisa_model", "lisa_ros", "training", "bench", "tests", "launch", "config", "scripts", "docs")
PACKAGES = ("lisa_model", "lisa_ros", "training", "bench", "tests")
# Old module names the README's "What changed" names on purpose: they must stay gone.
RETIRED_MODULES = ("lisa_ros.pipeline", "lisa_model.demo", "training.mini_data")


def _text(value) -> str:
    return str(value).lower() if isinstance(value, bool) else f'"{value}"' if isinstance(value, str) else str(value)


def parameters_table() -> str:
    rows = [TABLE_HEADER, "| --- | --- | --- | --- | --- |"]
    for p in PARAMETERS:
        rows.append(
            f"| `{p.name}` | {p.type.__name__} | `{_text(p.default)}` | {p.constraints or 'any'} | {p.description} |"
        )
    return "\n".join(rows)


def write_parameters_table(path: Path = ROS_DOCS) -> None:
    """Replace the parameter table in `path` (its header row up to the last row) with parameters_table()."""
    lines = path.read_text().split("\n")
    start = lines.index(TABLE_HEADER)
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    lines[start:end] = parameters_table().split("\n")
    path.write_text("\n".join(lines))


def _prose(text: str) -> str:
    """The text without fenced code blocks (their brackets and backticks are not markdown)."""
    return re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading anchor of a markdown page (repeated headings get -1, -2, ... as on GitHub)."""
    seen: dict[str, int] = {}
    result = set()
    for match in re.finditer(r"^#{1,6}\s+(.+?)\s*#*$", _prose(page.read_text()), flags=re.M):
        slug = _slug(match.group(1))
        result.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
        seen[slug] = seen.get(slug, 0) + 1
    return result


def broken_links(page: Path) -> list[str]:
    """The relative links of `page` whose file, or heading within a markdown file, does not exist."""
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", _prose(page.read_text())):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, ...
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target} (no such heading)")
    return broken


def _code_spans(text: str) -> list[str]:
    return re.findall(r"`([^`\n]+)`", _prose(text))


def _module_file(dotted: str) -> Path | None:
    """The source file of a module of ours (package: its __init__.py), or None."""
    base = ROOT.joinpath(*dotted.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _defines(source: str, name: str) -> bool:
    """Whether a module's source defines or imports `name` at some level."""
    pattern = rf"^\s*(def|class)\s+{name}\b|^{name}\s*[:=]|^\s*from\s+\S+\s+import\s[^\n]*\b{name}\b|^\s+{name},$"
    return re.search(pattern, source, flags=re.M) is not None


def _missing_path(span: str) -> str | None:
    """Why a `code` span naming a repository path (lisa_ros/..., tests/...) is wrong, or None."""
    if not re.fullmatch(rf"(?:{'|'.join(REPOSITORY_FOLDERS)})/[\w./-]*", span):
        return None
    if re.search(r"/[A-Z]\w*$", span):  # lisa_ros/SegmentationResult, lisa_ros/srv/Segment: ROS types
        return None
    return None if (ROOT / span).exists() else f"path {span}"


def _missing_module(span: str) -> str | None:
    """Why a `code` span naming a module or name of ours (lisa_ros.bag.runner.evaluate(...)) is wrong, or None."""
    dotted = re.match(rf"(?:{'|'.join(PACKAGES)})(?:\.[A-Za-z_]\w*)+", span)
    if not dotted or dotted.group(0) in RETIRED_MODULES:
        return None
    parts = dotted.group(0).split(".")
    # The longest prefix that is a module; the next part must be a name it defines or imports.
    depth = next((n for n in range(len(parts), 0, -1) if _module_file(".".join(parts[:n]))), 0)
    if depth == 0:
        return f"module {dotted.group(0)}"
    module = ".".join(parts[:depth])
    if depth < len(parts) and not _defines(_module_file(module).read_text(), parts[depth]):
        return f"name {dotted.group(0)} ({parts[depth]} not in {module})"
    return None


def _missing_main(module: str) -> str | None:
    """Why `python -m module` (a module of ours) cannot run, or None."""
    base = ROOT.joinpath(*module.split("."))
    if module.split(".")[0] not in PACKAGES or base.with_suffix(".py").is_file() or (base / "__main__.py").is_file():
        return None
    return f"python -m {module}"


def missing_code(page: Path) -> list[str]:
    """Paths, modules and `python -m` targets of ours that `page` names but the repository lacks."""
    text = page.read_text()
    problems = [check(span) for span in _code_spans(text) for check in (_missing_path, _missing_module)]
    problems += [_missing_main(m) for m in re.findall(r"(?:python|torchrun)\b[^\n]*?\s-m\s+([A-Za-z_][\w.]*)", text)]
    for module, names in re.findall(r"^\s*from\s+([\w.]+)\s+import\s+([\w, ]+)$", text, flags=re.M):
        problems += [_missing_module(f"{module}.{name.strip()}") for name in names.split(",")]
    return [problem for problem in problems if problem]


def test_docs_list_every_parameter():
    assert parameters_table() in ROS_DOCS.read_text(), (
        "docs/ros.md's parameter table is stale: run .venv/bin/python tests/ros/test_docs.py --write"
    )


def test_relative_links_lead_to_existing_files_and_headings():
    broken = {page.relative_to(ROOT).as_posix(): broken_links(page) for page in PAGES}
    assert not {page: links for page, links in broken.items() if links}


def test_docs_name_existing_paths_and_modules():
    missing = {page.relative_to(ROOT).as_posix(): missing_code(page) for page in PAGES}
    assert not {page: names for page, names in missing.items() if names}


def test_retired_modules_are_gone():
    assert not [name for name in RETIRED_MODULES if _module_file(name)]


def test_link_checks_catch_what_they_are_for(tmp_path):
    (tmp_path / "other.md").write_text("# A heading (`with_code`)\n\n## Again\n\n## Again\n")
    page = tmp_path / "page.md"
    page.write_text(
        "[a](other.md#a-heading-with_code) [b](other.md#again-1) [c](https://example.com/x) [d](#top)\n"
        "# Top\n```\n[not a link](nowhere.md)\n```\n"
        "[gone](missing.md) [no heading](other.md#nothing)\n"
    )
    assert broken_links(page) == ["missing.md (no such file)", "other.md#nothing (no such heading)"]


def test_code_checks_catch_what_they_are_for(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "`lisa_ros/runtime/parameters.py` `lisa_ros.runtime.parameters.PARAMETERS` `lisa_ros/msg/Thing`\n"
        "`lisa_ros/nowhere.py` `lisa_ros.nowhere.thing` `lisa_ros.runtime.parameters.NOTHING`\n"
        "```\npython -m bench.latency\npython -m bench.nowhere --size tiny\n"
        "from lisa_model import LisaPredictor, NoSuchPredictor\n```\n"
    )
    assert missing_code(page) == [
        "path lisa_ros/nowhere.py",
        "name lisa_ros.nowhere.thing (nowhere not in lisa_ros)",
        "name lisa_ros.runtime.parameters.NOTHING (NOTHING not in lisa_ros.runtime.parameters)",
        "python -m bench.nowhere",
        "name lisa_model.NoSuchPredictor (NoSuchPredictor not in lisa_model)",
    ]


if __name__ == "__main__":
    if "--write" in sys.argv[1:]:
        write_parameters_table()
        print(f"rewrote the parameter table in {ROS_DOCS.relative_to(ROOT)}")
    else:
        print(parameters_table())
