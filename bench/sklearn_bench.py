"""scikit-learn on joblib backends, side by side in one run: loky, pycrew, sequential.

Three workloads, each run with ``n_jobs=2`` (default) under joblib's loky
backend, under the ``"pycrew"`` backend (its shared, warm controller: no
``controller=``), and sequentially (``n_jobs=1``):

- ``rf_grid``: ``GridSearchCV`` of a ``RandomForestClassifier``, 6 settings
  x 3 folds = 18 fits, on ``make_classification`` (1,000 x 20);
- ``lr_grid``: ``GridSearchCV`` of a ``LogisticRegression``, 10 values of
  ``C`` x 3 folds = 30 fits, on ``make_classification`` (500 x 20);
- ``cv_score``: ``cross_val_score`` of a ``GradientBoostingClassifier``,
  5 folds, on ``load_digits`` (shipped with scikit-learn).

The systems take turns per repetition (loky, pycrew, sequential, then
again), so that each sees the machine in the same state. The first
repetition includes each backend's cold start (loky's executor and
pycrew's workers start there and import scikit-learn); the later ones
reuse the warm workers. Prints each time, the median of the warm
repetitions, and each backend's ratio to loky's wall time.

    python bench/sklearn_bench.py                # 5 repetitions, n_jobs=2
    python bench/sklearn_bench.py --reps 3 --n-jobs 4 --json /tmp/sklearn.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from typing import TYPE_CHECKING, Any

import joblib
import sklearn
from sklearn.datasets import load_digits, make_classification
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, cross_val_score

import pycrew

if TYPE_CHECKING:
    from collections.abc import Callable

SYSTEMS = ("loky", "pycrew", "sequential")


def workloads(n_jobs: int) -> dict[str, Callable[[], object]]:
    """Each workload as a function of no arguments, its data made once, here."""
    X_rf, y_rf = make_classification(n_samples=1000, n_features=20, random_state=0)
    X_lr, y_lr = make_classification(n_samples=500, n_features=20, random_state=1)
    X_cv, y_cv = load_digits(return_X_y=True)
    rf_grid = {"n_estimators": [20, 50], "max_depth": [4, 8, None]}
    lr_grid = {"C": [10.0**k for k in range(-4, 6)]}

    def rf() -> object:
        search = GridSearchCV(RandomForestClassifier(random_state=0), rf_grid, cv=3, n_jobs=n_jobs)
        return search.fit(X_rf, y_rf).best_params_

    def lr() -> object:
        search = GridSearchCV(LogisticRegression(max_iter=2000), lr_grid, cv=3, n_jobs=n_jobs)
        return search.fit(X_lr, y_lr).best_params_

    def cv() -> object:
        model = GradientBoostingClassifier(n_estimators=20, max_depth=2, random_state=0)
        return cross_val_score(model, X_cv, y_cv, cv=5, n_jobs=n_jobs).mean()

    return {"rf_grid": rf, "lr_grid": lr, "cv_score": cv}


def timed(system: str, work: Callable[[], object]) -> tuple[float, object]:
    if system == "sequential":
        backend, jobs = "sequential", 1
    else:
        backend, jobs = system, None  # the workload's own n_jobs
    start = time.perf_counter()
    with joblib.parallel_config(backend=backend, n_jobs=jobs):
        out = work()
    return time.perf_counter() - start, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--reps", type=int, default=5, help="repetitions (the first is cold)")
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--json", default=None, help="also write the raw times here")
    args = parser.parse_args(argv)
    if args.reps < 2:
        parser.error("--reps must be at least 2: the first repetition is the cold one")
    works = workloads(args.n_jobs)
    times: dict[str, dict[str, list[float]]] = {w: {s: [] for s in SYSTEMS} for w in works}
    answers: dict[str, dict[str, Any]] = {w: {} for w in works}
    print(
        f"Python {platform.python_version()}, scikit-learn {sklearn.__version__}, "
        f"joblib {joblib.__version__}, pycrew {pycrew.__version__}, "
        f"{os.cpu_count()} CPUs, n_jobs={args.n_jobs}"
    )
    for rep in range(args.reps):
        for system in SYSTEMS:
            for name, work in works.items():
                seconds, out = timed(system, work)
                times[name][system].append(seconds)
                answers[name].setdefault(system, out)
                print(f"rep {rep} {system:10s} {name:9s} {seconds:7.3f} s", flush=True)
    for name in works:
        agreed = {
            repr(v) if not isinstance(v, float) else f"{v:.6f}" for v in answers[name].values()
        }
        if len(agreed) != 1:
            print(f"warning: {name} answers differ between systems: {answers[name]}")
    print()
    heads = ("cold s", "warm s", "cold/loky", "warm/loky")
    print(f"{'workload':9s} {'system':10s} " + " ".join(f"{h:>9s}" for h in heads))
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for name in works:
        loky = times[name]["loky"]
        loky_cold, loky_warm = loky[0], statistics.median(loky[1:])
        summary[name] = {}
        for system in SYSTEMS:
            got = times[name][system]
            cold, warm = got[0], statistics.median(got[1:])
            summary[name][system] = {
                "cold": cold,
                "warm": warm,
                "cold_ratio": cold / loky_cold,
                "warm_ratio": warm / loky_warm,
            }
            print(
                f"{name:9s} {system:10s} {cold:9.3f} {warm:9.3f} "
                f"{cold / loky_cold:8.2f}x {warm / loky_warm:8.2f}x"
            )
    if args.json:
        with open(args.json, "w") as out:
            json.dump(
                {"n_jobs": args.n_jobs, "cpus": os.cpu_count(), "times": times, "summary": summary},
                out,
                indent=2,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
