"""`seeds` and `envs` in [start_states] and [clones]: which of the study's runs they take,
checked against the [[train]] entries when the file is read (one line, nothing run), and
the teachers / runs the stages then plan."""
from __future__ import annotations

import shutil
import textwrap

import pytest

from conftest import TINY_AGENT, TINY_TRAIN, run_cli

TRAIN = """
[[train]]
seeds = 2
steps = 1000
checkpoints = [500, 1000]
store_states = true
"""


@pytest.mark.parametrize("section, message", [
    ('[clones]\nseeds = "0..5"', "clones.seeds: 2,3,4,5 are not the seed of a run of a TD3 [[train]] entry "
                                 "(they train seeds 0..1)"),
    ('[clones]\nseeds = "7"', "clones.seeds: 7 is not the seed of a run of a TD3 [[train]] entry"),
    ('[clones]\nenvs = ["ant"]', "clones.envs: 'ant' has no TD3 [[train]] entry (those train hopper)"),
    ('[clones]\nenvs = []', "clones.envs: Value error, the list of envs is empty"),
    ('[clones]\nenvs = ["hopper", "hopper"]', "envs are given twice"),
    ('[clones]\nseeds = "1..0"', "clones.seeds"),
    ('[clones]\nseeds = "x"', "clones.seeds"),
    ('[start_states]\nseeds = "2"', "start_states.seeds: 2 is not the seed of a run of a [[train]] entry with "
                                     "store_states = true (they train seeds 0..1)"),
    ('[start_states]\nenvs = ["walker2d"]', "start_states.envs: 'walker2d' has no [[train]] entry with "
                                            "store_states = true"),
    ('[start_states]\nenvs = ["hopper"]\nseeds = "0,3"', "start_states.seeds: 3 is not the seed of a run of a "
                                                         "[[train]] entry with store_states = true on hopper"),
])
def test_a_choice_no_entry_trains_is_refused_in_one_line(tmp_path, capsys, monkeypatch, section, message):
    (tmp_path / "s.toml").write_text('name = "x"\n' + TRAIN + section + "\n")
    code, _, err = run_cli(capsys, monkeypatch, "study", tmp_path / "s.toml", "-w", tmp_path / "wh")
    text = " ".join(err.split())
    assert code == 2 and message.replace("Value error, ", "") in text, err
    assert len([line for line in err.splitlines() if line.strip()]) == 1, err
    assert not (tmp_path / "wh").exists()


def test_seeds_count_from_each_entrys_seed(tmp_path):
    """Two entries of one task, seeds 0..2 and 3..4: seeds = "1,3" takes one run of each."""
    from retland.study import load_study

    body = 'name = "x"\n' + TRAIN.replace("seeds = 2", "seeds = 3") + TRAIN.replace(
        "seeds = 2", "seeds = 2\nseed = 3").replace("store_states = true\n", "") + '[clones]\nseeds = "1,3"\n'
    (tmp_path / "s.toml").write_text(body)
    study, _ = load_study(tmp_path / "s.toml")
    assert [study.clones.picks(t) for t in study.train] == [[1], [0]]
    assert study.clones.seeds == (1, 3) and study.clones.envs is None


def test_clones_plan_only_the_chosen_runs(tmp_path):
    """On the tiny trained job (seeds 0 and 1): seeds = "1" clones seed 1's runs only."""
    from analysis_jobs import tiny_job
    from retland.study import load_study, stages
    from retland.warehouse import Warehouse

    src, result = tiny_job()
    shutil.copytree(src.root, tmp_path / "wh")
    (tmp_path / "tiny-agent.toml").write_text(TINY_AGENT)
    (tmp_path / "s.toml").write_text(textwrap.dedent('name = "x"\n' + TINY_TRAIN + """
        [clones]
        seeds = "1"
        envs = ["hopper"]
        teachers_per_run = 2
        steps = 40
        samples = 8
        horizon = 20
        """))
    study, base = load_study(tmp_path / "s.toml")
    st = dict(stages(study, base))["clones"](Warehouse.open(tmp_path / "wh", create=False))
    (request,) = st.requests
    assert request.teachers == (f"{result.run_ids[1]}@60", f"{result.run_ids[1]}@120")
    (w,) = {(w.algo, w.seeds, w.steps) for w in st.training}
    assert w == ("bc", 1, 40) and len(st.training) == 2  # one BC job per teacher, none trained yet
