"""Where code lives: the command line (cli/) parses options, calls retland's library and
prints; the SQL it runs lives in schema/*.sql (views, macros) or in the library module
that owns the query. No test here runs a command."""
from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLI = REPO / "cli"

# SQL as retland writes it: upper-case keywords. Help texts name SQL only in words
# ("an SQL condition on …"), never as a statement.
SQL = re.compile(r"\bSELECT\b|\bFROM\s+[\w\"(]|\bWHERE\b|\bJOIN\b|\bGROUP\s+BY\b|\bORDER\s+BY\b|\bHAVING\b"
                 r"|\bDESCRIBE\s+[\w\"]|\bINSERT\s+INTO\b|\bDELETE\s+FROM\b|\bCREATE\s+(?:OR\s+REPLACE\s+)?"
                 r"(?:TEMP\s+)?(?:VIEW|MACRO|TABLE)\b")


def string_texts(source: str) -> list[tuple[int, str]]:
    """(line, text) of every string constant of a module, docstrings and f-strings
    included; adjacent literals are one constant, an f-string's fields read as {}."""
    out, parts = [], set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.JoinedStr):
            parts.update(id(v) for v in node.values)
            text = "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
            out.append((node.lineno, text))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in parts:
            out.append((node.lineno, node.value))
    return out


def test_the_sql_pattern_finds_sql_and_not_help_words():
    found = [t for _, t in string_texts(
        'x = "SELECT 1"\n'
        'y = f"SELECT * FROM {name} s " "WHERE s.a = ?"\n'
        'z = "run_id " f"IN ({q})"\n'
        'h = "SQL condition on algo, env, e.g. \\"env = \'hopper\' AND step >= 5\\"; choose from trained"\n'
        'd = f\'DESCRIBE "{name}"\'\n') if SQL.search(t)]
    assert len(found) == 3 and all(t.startswith(("SELECT", "DESCRIBE")) for t in found)


def test_cli_holds_no_sql_text():
    offenders = [f"{path.relative_to(REPO)}:{line}: {text[:70]!r}"
                 for path in sorted(CLI.glob("*.py"))
                 for line, text in string_texts(path.read_text())
                 if SQL.search(text)]
    assert not offenders, ("SQL in cli/ (move it to a schema/*.sql view or macro, or to the library "
                           "module that owns the query):\n" + "\n".join(offenders))


def test_cli_files_do_not_spell_sql_keywords():
    # The grep of the issue: `grep -cE "SELECT|FROM |WHERE " cli/*.py` totals 0 (comments too).
    hits = [f"{p.name}:{i}" for p in sorted(CLI.glob("*.py"))
            for i, line in enumerate(p.read_text().splitlines(), 1) if re.search(r"SELECT|FROM |WHERE ", line)]
    assert hits == []
