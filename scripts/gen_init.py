"""Regenerate a layer package's __init__.py re-exports from its public modules' __all__.

Usage: python scripts/gen_init.py cronloop.sync "docstring first line" [module order...]
Keeps the package docstring if the file already has one. Developer tool, not shipped.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path


def main() -> None:
    package = sys.argv[1]
    order = sys.argv[2:]
    root = Path("src") / Path(*package.split("."))
    init = root / "__init__.py"
    doc = ast.get_docstring(ast.parse(init.read_text())) if init.exists() else None
    modules = order or sorted(p.stem for p in root.glob("*.py") if not p.stem.startswith("_"))
    lines = [
        f'"""{doc}\n"""\n' if doc else f'"""{package}."""\n',
        "from __future__ import annotations\n",
    ]
    names: list[str] = []
    for mod in modules:
        tree = ast.parse((root / f"{mod}.py").read_text())
        exported: list[str] = []
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
            ):
                exported = [ast.literal_eval(e) for e in node.value.elts]  # type: ignore[attr-defined]
        if not exported:
            continue
        names += exported
        body = ",\n".join(f"    {n}" for n in sorted(exported))
        lines.append(f"from {package}.{mod} import (\n{body},\n)")
    lines.append("\n__all__ = [\n" + "".join(f'    "{n}",\n' for n in sorted(set(names))) + "]\n")
    init.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
