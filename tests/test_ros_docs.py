"""The README lists every lisa_node parameter as lisa_ros.parameters declares it.

Regenerate the table with: .venv/bin/python tests/test_ros_docs.py
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lisa_ros.parameters import PARAMETERS  # noqa: E402


def _text(value) -> str:
    return str(value).lower() if isinstance(value, bool) else f'"{value}"' if isinstance(value, str) else str(value)


def parameters_table() -> str:
    rows = ["| parameter | type | default | allowed | description |", "| --- | --- | --- | --- | --- |"]
    for p in PARAMETERS:
        rows.append(
            f"| `{p.name}` | {p.type.__name__} | `{_text(p.default)}` | {p.constraints or 'any'} | {p.description} |"
        )
    return "\n".join(rows)


def test_docs_list_every_parameter():
    docs = (ROOT / "README.md").read_text()
    assert (
        parameters_table() in docs
    ), "README.md's parameter table is stale: run .venv/bin/python tests/test_ros_docs.py"


if __name__ == "__main__":
    print(parameters_table())
