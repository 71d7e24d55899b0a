"""Every command's options follow docs/options.md: one name, one meaning, the commands that
take it, and the former spellings each still accepts (hidden, with a note)."""
from __future__ import annotations

import re

import pytest

from conftest import REPO, run_cli

DOC = REPO / "docs" / "options.md"


def _table() -> dict[str, dict]:
    """option -> {commands, former: {spelling: commands}} from the doc's table."""
    out = {}
    for line in DOC.read_text().splitlines():
        if not line.startswith("| `--"):
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        option = re.match(r"`(--[\w-]+)`", cells[0]).group(1)
        former = {}
        for spellings, commands in re.findall(r"((?:`--[\w-]+`/?)+) \(([^)]*)\)", cells[3]):
            for spelling in re.findall(r"`(--[\w-]+)`", spellings):
                former[spelling] = {c.strip() for c in commands.split(",")}
        assert option not in out, f"{option} has two rows"
        out[option] = {"commands": {c.strip() for c in cells[2].split(",")}, "former": former}
    return out


def _options() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(visible option -> commands, hidden option -> commands) of the app."""
    from typer.main import get_command

    from retland.cli.main import app

    visible: dict[str, set[str]] = {}
    hidden: dict[str, set[str]] = {}
    for name, command in get_command(app).commands.items():
        for param in command.params:
            if param.param_type_name != "option":
                continue
            longs = [o for o in param.opts if o.startswith("--")]
            if param.hidden:  # every spelling of a hidden one, --no-x of a flag pair too
                for o in longs + [o for o in getattr(param, "secondary_opts", []) if o.startswith("--")]:
                    hidden.setdefault(o, set()).add(name)
            else:
                visible.setdefault(longs[0], set()).add(name)
    return visible, hidden


def test_every_option_is_in_the_table_with_the_commands_that_take_it():
    table = _table()
    visible, hidden = _options()
    problems = []
    for option, commands in sorted(visible.items()):
        row = table.get(option)
        if row is None:
            problems.append(f"{option} ({', '.join(sorted(commands))}) is not in docs/options.md")
        elif row["commands"] != commands:
            problems.append(f"{option}: the table says {sorted(row['commands'])}, the commands are {sorted(commands)}")
    for option in sorted(set(table) - set(visible)):
        problems.append(f"{option} is in docs/options.md but no command takes it")
    former = {}
    for option, row in table.items():
        for spelling, commands in row["former"].items():
            for c in commands:
                former[(spelling, c)] = option
    for option, commands in sorted(hidden.items()):
        for c in sorted(commands):
            if (option, c) not in former:
                problems.append(f"{c} {option} is hidden but not listed as a former spelling")
    for (spelling, c), option in sorted(former.items()):
        if c not in hidden.get(spelling, set()) and not (spelling == option):
            problems.append(f"docs/options.md lists {spelling} as {c}'s former spelling of {option}, but {c} "
                            f"does not accept it")
    assert not problems, "\n".join(problems)


def test_one_name_one_meaning_for_the_seeds():
    """The three seeds have three names: no command's --seed is a noise or bootstrap seed."""
    visible, _ = _options()
    assert visible["--seed"] == {"clone", "failures", "import-policy", "render", "runs", "show", "train"}
    assert visible["--noise-seed"] == {"interpolate", "landscape"}
    assert visible["--bootstrap-seed"] == {"clones", "compare", "stabilize-effect", "start-states"}


@pytest.mark.parametrize("args, note", [
    (["report", "--out", "{tmp}/r.html", "--bootstrap", "0"], "--out is now --output"),
    (["stats", "--bootstrap"], None),  # a flag before it took a count: alone it means 1000
])
def test_former_spellings_still_work_and_say_the_new_one(filled, tmp_path, capsys, monkeypatch, args, note):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    code, out, err = run_cli(capsys, monkeypatch, *args, "-w", filled)
    assert code == 0, err
    if note:
        assert note in " ".join(err.split())


def test_a_former_and_a_new_spelling_together_are_refused(filled, tmp_path, capsys, monkeypatch):
    code, _, err = run_cli(capsys, monkeypatch, "report", "--out", tmp_path / "a.html", "--output",
                           tmp_path / "b.html", "-w", filled)
    assert code == 2 and "--output and --out are the same option" in err
    assert not (tmp_path / "a.html").exists() and not (tmp_path / "b.html").exists()


def test_both_spellings_are_refused_even_at_the_default(filled, capsys, monkeypatch):
    """--bootstrap 2000 is compare's default: typed with --reps it is still two answers."""
    code, _, err = run_cli(capsys, monkeypatch, "compare", "--bootstrap", "2000", "--reps", "500", "-w", filled)
    assert code == 2 and "--bootstrap and --reps are the same option" in err
