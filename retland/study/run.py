"""Running a study's requests with the library's runners, in this process.

Every request kind has one runner, the function its command calls after parsing its
options (the command then prints what it returns):

    TrainRequest          retland.train.request.run_request
    ExampleRequest        retland.shipped.run_request
    SampleRequest         retland.purd.job.run_request
    FailuresRequest       retland.analyses.render.run_failures_request (the pairs, then their frames)
    LandscapeRequest      retland.analyses.landscape.run_request
    InterpolationRequest  retland.analyses.interpolation.run_request
    StabilizeRequest      retland.analyses.stabilize.run_request
    StartStatesRequest    retland.analyses.start_states.run_request
    CloneRequest          retland.analyses.clones.run (train the clones, sample clones and teachers)
    StatsRequest          retland.analyses.distributions.run_request
    ReportRequest         retland.report.run_request

`retland study` calls the commands' own `execute` functions (runner + display) so that
its log shows what each command shows; `run_stage` here is the same without display,
for a study driven from Python.
"""
from __future__ import annotations

import dataclasses
from importlib import import_module

from retland.config.requests import Bar
from retland.study.planners import Stage

__all__ = ["RUNNERS", "runner_of", "run_request", "run_stage", "sharded"]

# request class name -> module whose `run_request(wh, request, *, progress=None, ...)` runs it
# (or "module:function" for another name)
RUNNERS = {
    "TrainRequest": "retland.train.request",
    "ExampleRequest": "retland.shipped",
    "SampleRequest": "retland.purd.job",
    "FailuresRequest": "retland.analyses.render:run_failures_request",
    "LandscapeRequest": "retland.analyses.landscape",
    "InterpolationRequest": "retland.analyses.interpolation",
    "StabilizeRequest": "retland.analyses.stabilize",
    "StartStatesRequest": "retland.analyses.start_states",
    "CloneRequest": "retland.analyses.clones:run",
    "StatsRequest": "retland.analyses.distributions",
    "ReportRequest": "retland.report",
}


def runner_of(request):
    """The library runner of a request (imported when first asked for: most load JAX)."""
    name = type(request).__name__
    if name not in RUNNERS:
        raise TypeError(f"no runner for {name}: not a request retland.study knows")
    module, _, function = RUNNERS[name].partition(":")
    return getattr(import_module(module), function or "run_request")


def run_request(wh, request, *, progress: Bar | None = None):
    """Run one request into `wh` with its library runner; returns the runner's result."""
    return runner_of(request)(wh, request, progress=progress)


def sharded(stage: Stage, shard: str) -> Stage:
    """The stage with shard i/N of its sample requests (a study's --shard): shards share
    one warehouse, and only sampling is split."""
    return dataclasses.replace(stage, requests=[
        dataclasses.replace(r, shard=shard) if type(r).__name__ == "SampleRequest" else r for r in stage.requests])


def run_stage(wh, stage: Stage, *, progress: Bar | None = None) -> list:
    """Run a stage's requests in order; returns their results."""
    return [run_request(wh, r, progress=progress) for r in stage.requests]
