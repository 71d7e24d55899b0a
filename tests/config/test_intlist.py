"""One syntax for seed and step lists (retland.config.intlist): the study file's lists and every
command-line option that takes one read it alike, and refuse the same mistakes in one line.
Nothing here opens a warehouse or compiles anything."""
from __future__ import annotations

import tomllib

import pytest

from conftest import run_cli
from retland.config.intlist import INT32_MAX, IntListError, parse_int_list
from retland.study import Study, StudyError


@pytest.mark.parametrize("text, want", [
    ("0..9", tuple(range(10))),
    ("0,2,5..7", (0, 2, 5, 6, 7)),
    ("2-4", (2, 3, 4)),  # the older LO-HI form still reads
    (" 1 , 3 ,", (1, 3)),
    ("3..3", (3,)),
    ("5e4,1.5e5", (50_000, 150_000)),  # whole numbers in e-notation, as env steps are written
    ("1e5..100002", (100_000, 100_001, 100_002)),
])
def test_lists_and_ranges(text, want):
    assert parse_int_list(text, "--seeds") == want


# (text, bounds, words the one-line error must contain)
BAD = [
    ("5..3,1", {}, "range '5..3' is reversed"),
    ("5-2", {}, "range '5-2' is reversed"),
    ("", {}, "no values given"),
    (" , ,", {}, "no values given"),
    ("late", {}, "'late' is not a whole number"),
    ("1.5", {}, "'1.5' is not a whole number"),
    ("0..", {}, "'0..' is not a whole number"),
    ("..3", {}, "'..3' is not a whole number"),
    ("inf", {}, "'inf' is not a whole number"),
    ("-3", {}, "'-3' is out of range; values must be in [0, "),
    ("0", {"minimum": 1}, "'0' is out of range; values must be in [1, "),
    ("3000000000", {"maximum": INT32_MAX}, f"'3000000000' is out of range; values must be in [0, {INT32_MAX}]"),
    (str(10**30), {}, "is out of range"),
    ("1e400", {}, "'1e400' is out of range"),
    ("0..1000000000000", {}, "'0..1000000000000' makes more than 100000 values"),
]


@pytest.mark.parametrize("text, bounds, words", BAD)
def test_mistakes_are_one_line_naming_the_option_and_the_part(text, bounds, words):
    with pytest.raises(IntListError) as exc:
        parse_int_list(text, "--seeds", **bounds)
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith(f"--seeds {text!r}: ") and words in msg, msg


def _study(body: str) -> Study:
    return Study.model_validate(tomllib.loads('name = "x"\nexamples = ["td3-hopper"]\n[sample]\n' + body))


def test_a_reversed_range_in_a_study_is_refused_not_dropped(tmp_path):
    """seeds = "5..3,1" used to become (1,): the reversed range vanished."""
    with pytest.raises(StudyError, match=r"stabilize: seeds '5\.\.3,1': range '5\.\.3' is reversed"):
        _load(tmp_path, '{EXAMPLE}[stabilize]\nseeds = "5..3,1"\n'.format(EXAMPLE=EXAMPLE))
    assert _study('[stabilize]\nseeds = "0..2,7"\n').stabilize.seed_list() == (0, 1, 2, 7)
    assert _study('[stabilize]\nseeds = "2-4"\n').stabilize.seed_list() == (2, 3, 4)


def test_study_step_lists_may_be_written_as_the_command_line_takes_them():
    study = Study.model_validate(tomllib.loads(
        'name = "x"\n[[train]]\nseeds = 1\nsteps = 1000\ncheckpoints = "500,1e3"\n[sample]\nsteps = "500"\n'))
    assert study.train[0].checkpoints == (500, 1000) and study.sample.steps == (500,)
    with pytest.raises(Exception, match=r"checkpoints '0,500': '0' is out of range; values must be in \[1, "):
        Study.model_validate(tomllib.loads('name = "x"\n[[train]]\nseeds = 1\nsteps = 1000\ncheckpoints = "0,500"\n'))


# Every place that reads a seed/step list, paired: a study field and the option of the
# command the study runs with it (same bounds), on a command line whose other arguments
# are fine (the warehouse does not exist, so nothing past the options runs).
NOWHERE = "/nonexistent/retland-wh"
SAMPLE = ["sample", "--operator", "td3", "--algo", "td3", "--env", "hopper", "-w", NOWHERE]
EXAMPLE = 'name = "x"\nexamples = ["td3-hopper"]\n[sample]\n'
PAIRS = {  # study field: (study file with {text}, command line)
    "stabilize.seeds": (EXAMPLE + "[stabilize]\nseeds = {text}\n",
                        ["stabilize", "--run", "r", "--step", "1", "-w", NOWHERE, "--seeds"]),
    "sample.steps": (EXAMPLE + "steps = {text}\n", [*SAMPLE, "--steps"]),
    "train.checkpoints": ('name = "x"\n[[train]]\nseeds = 1\nsteps = 1000\ncheckpoints = {text}\n',
                          ["train", "--total-steps", "1000", "-w", NOWHERE, "--checkpoints"]),
    "(no study field)": (None, [*SAMPLE, "--seeds"]),
}


def _load(tmp_path, body: str):
    from retland.study import load_study

    p = tmp_path / "study.toml"
    p.write_text(body)
    return load_study(p)


def _error_tail(msg: str, text: str) -> str:
    """The error after its "WHAT 'TEXT': " head, which names the option or field."""
    head = f"{text!r}: "
    assert head in msg, msg
    return " ".join(msg.split(head, 1)[1].split())


def _parse_error(args_or_field: str, text: str, message: str) -> str | None:
    """The list parser's error in `message` (its tail), or None when `message` has none."""
    head = f"{args_or_field} {text!r}: "
    return _error_tail(message, text) if head in message else None


ALWAYS_WRONG = ["5..3,1", "late", "1..x", "", " , ", "1.5", "0..1000000000000", "-1", str(2**64)]


@pytest.mark.parametrize("text", [*ALWAYS_WRONG, "0", "3000000000", "0..2"])
def test_study_and_command_lines_read_lists_alike(text, tmp_path, capsys, monkeypatch):
    """Each study field and the option its command takes accept the same texts and refuse
    the same ones with the same one-line reason."""
    for field, (body, args) in PAIRS.items():
        code, out, err = run_cli(capsys, monkeypatch, *args, text)
        assert code == 2 and len(err.strip().splitlines()) == 1, (args, err)  # (no warehouse, at best)
        cli = _parse_error(args[-1], text, err)
        assert (cli is not None) >= (text in ALWAYS_WRONG), (args, err)
        if body is None:
            try:
                parse_int_list(text, "x")
                want = None
            except IntListError as exc:
                want = _error_tail(str(exc), text)
            assert cli == want, (args, err)
            continue
        try:
            _load(tmp_path, body.format(text=f'"{text}"'))
            study_err = ""
        except StudyError as exc:
            study_err = str(exc)
        assert _parse_error(field.split(".")[1], text, study_err) == cli, (field, study_err, err)


@pytest.mark.parametrize("text", ["0..9", "0,1,5-9", "0..2,7"])
def test_sample_takes_the_ranges_other_commands_take(text, capsys, monkeypatch):
    """`retland sample --seeds 0..9` was refused; now it gets past its options to the warehouse."""
    for args in ([*SAMPLE, "--seeds"], [*SAMPLE, "--steps"], PAIRS["stabilize.seeds"][1]):
        code, out, err = run_cli(capsys, monkeypatch, *args, text)
        assert code == 2 and "no warehouse at" in err and "--seeds" not in err and "--steps" not in err, (args, err)
