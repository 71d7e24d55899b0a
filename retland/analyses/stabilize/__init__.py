"""Algorithm 1: post-update rejection of TD3 updates (paper §4.2, Fig. 7, A.9, A.10).

From a TD3 checkpoint, every *lane* (one rejection seed × one arm) repeats P times:

    propose   one env step of the collection env with exploration noise 0.1, the
              transition appended at index `size` of the replay buffer, one full TD3
              update (critic; actor and targets when the update counter says so) —
              computed by `retland.train.program`'s own step functions (`offpolicy_collect`,
              `offpolicy_update`), so the baseline arm is training continued (the same step functions in
              another compiled program: equal to float rounding);
    estimate  the PURD of the proposed state: N td3-operator samples
              J(U(proposed, key_i)), plus J(θ) of the proposed actor itself;
    decide    arm `reject`: accept iff the criterion holds against the last accepted
              state (cvar: CVaR_α(new) ≥ CVaR_α(last) − tol; ltp: LTP(new) ≤ LTP(last) +
              tol; mean: mean(new) ≥ mean(last) − tol); arm `baseline`: always accept.
              A rejected proposal is undone entirely: networks, targets, optimizer
              states, update counter, replay rows and size, collection env state.

Choices (docs/method.md §6.4 leaves them open):
- The collection env (reset noise 10% of the task's standard) starts a fresh episode
  from the checkpoint and continues along the *accepted* trajectory only: a rejected
  step's env transition is undone with the rest, so the buffer stays one consistent
  trajectory (s' of a row is s of the next, except at resets) as in training, and the
  next proposal retries from the same env state with new noise. Episodes reset on
  termination or at the run's horizon (truncation bootstraps, as in training).
- Keys. Rejection seed s: the lane's training stream starts at fold_in(PRNGKey(s), 0)
  and is split exactly as training splits it, every proposal, accepted or not (a
  rejected proposal is not retried with the same noise); the collection episode resets
  from fold_in(PRNGKey(s), 2). Both arms of a seed therefore use the same keys, and the
  baseline arm *is* plain TD3 training continued from the checkpoint. The PURD of every
  proposal of seed s uses base key fold_in(PRNGKey(s), 1), so sample i of two states
  shares its key. That is *not* common random numbers: the td3 operator's minibatch is
  randint(key, 0, size), and the proposal's buffer holds one row more, which remaps
  every index, so the proposal's estimate and the one it is compared with are
  independent (as in the authors' code, which draws fresh minibatches).
- The decision is made on the host from `retland.stats` (float64, the same numbers
  the table records and `schema/10_stats.sql` recomputes), so a stored row replays its
  own decision exactly. For the ltp criterion a PURD with mode ≤ 0 counts as LTP 1.

All lanes run in one vmapped program per phase (propose, estimate, commit); Python
loops only over the P proposals, each of which is N + 1 full rollouts per lane.
Memory: each lane holds its own replay buffer (checkpoint rows + P), so lanes × buffer
must fit on the device; run fewer seeds per call otherwise.

Several sources (the paper's Fig. 7 aggregates ≥ 10 source policies per env; A.10
shows each): `plan_sources` / `run_sources` run one experiment per source, written as
each finishes, skipping sources already done with the same settings, with one compiled
program for sources of one training config (`sources.py`). `fig7_table` aggregates the
view stabilize_sources per env: IQM over sources of the paired reject − baseline change
of the own-mode LTP (each PURD's LTP against its own mode, the paper's), the mean return
and retland's LTP against the source's mode, with stratified bootstrap CIs.

Output: one `stabilize_steps` row per lane and proposal (proposal 0 = the checkpoint),
the PURD samples in `stabilize_returns`, and the final state of each lane as a derived
run (runs.source = 'derived', parent_run_id, parent_step) with one checkpoint, which
`retland sample` and the report treat like any other.
"""
from retland.analyses.stabilize.config import ARMS, AUTO_CHUNK, CRITERIA, StabilizeConfig, accepts, criterion_value
from retland.analyses.stabilize.effect import arm_effect, fig7_table, source_rows, sources_at
from retland.analyses.stabilize.experiment import (
    StabilizeResult,
    derived_run_id,
    load_source,
    new_experiment_id,
    run_experiment,
    write_result,
)
from retland.analyses.stabilize.program import (
    Lane,
    OwnOrUpdate,
    commit,
    initial_lanes,
    program_config,
    propose_fn,
    purd_fn,
)
from retland.analyses.stabilize.sources import (
    SourceOutcome,
    SourcePlan,
    StabilizeRequest,
    check_source,
    completed_experiment,
    parse_selection,
    plan_sources,
    run_request,
    run_sources,
    top_ltp_sources,
)

__all__ = ["ARMS", "AUTO_CHUNK", "CRITERIA", "StabilizeConfig", "accepts", "criterion_value", "arm_effect",
           "fig7_table", "source_rows", "sources_at", "StabilizeResult", "derived_run_id", "load_source",
           "new_experiment_id", "run_experiment", "write_result", "Lane", "OwnOrUpdate", "commit", "initial_lanes",
           "program_config", "propose_fn", "purd_fn", "SourceOutcome", "SourcePlan", "check_source",
           "completed_experiment", "parse_selection", "plan_sources", "run_sources", "top_ltp_sources",
           "StabilizeRequest", "run_request"]
