"""What a running sweep shows and how it stops: the progress line, and SIGINT/SIGTERM handling."""

from __future__ import annotations

import signal
import sys
import threading
import time

import ray
import ray.tune as tune

from pp_cluster.config import SweepSpec
from pp_cluster.farm.pool import get_pool


class Interrupted(Exception):
    """The sweep was stopped by a signal; ``unfinished`` names what a ``--resume`` will do."""

    def __init__(self, signum: int, unfinished: list[str]) -> None:
        self.signum, self.unfinished = signum, unfinished
        name = signal.Signals(signum).name
        super().__init__(f"sweep interrupted by {name}: {len(unfinished)} model(s) unfinished")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class Signals:
    """Ctrl-C and SIGTERM end a sweep the same way: Tune ends its loop (its own SIGINT
    handling), the driver lists what is unfinished and exits 128 + the signal (130, 143).
    Outside Tune's loop either signal raises KeyboardInterrupt. Which signal it was is
    recorded here: SIGTERM by our handler, SIGINT by wrapping Tune's when its loop starts."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._old_term = None

    def record(self, signum: int) -> None:
        self.received = self.received or signum

    def install(self) -> None:
        """(Re)install the SIGTERM handler: ray.init replaces it with one that exits 1."""
        if threading.current_thread() is threading.main_thread():
            old = signal.signal(signal.SIGTERM, self._on_term)
            if self._old_term is None:
                self._old_term = old

    def restore(self) -> None:
        if self._old_term is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._old_term)

    def _on_term(self, signum, frame) -> None:
        self.record(signum)
        handler = signal.getsignal(signal.SIGINT)
        if callable(handler) and handler is not signal.default_int_handler:
            handler(signal.SIGINT, frame)  # Tune's: stop the loop gracefully
        else:
            raise KeyboardInterrupt

    def wrap_tune(self) -> None:
        """Called once Tune has installed its SIGINT handler: note a Ctrl-C, then let Tune stop."""
        tune_handler = signal.getsignal(signal.SIGINT)
        if not callable(tune_handler) or threading.current_thread() is not threading.main_thread():
            return

        def on_int(signum, frame):
            self.record(signum)
            tune_handler(signum, frame)

        signal.signal(signal.SIGINT, on_int)


class Progress(tune.Callback):
    """One live line: trials done / running (each one's last epoch) / failed, attacks done / total."""

    def __init__(self, sweep: SweepSpec, n_trials: int | None, signals: Signals | None = None) -> None:
        self.signals = signals
        self.sweep, self.n_trials = sweep, n_trials
        self.n_attackers = len(sweep.attackers)
        self.done = self.failed = 0
        self.running: set[str] = set()
        self.epoch: dict[str, int] = {}  # running trial -> its last epoch reported
        self._last = 0.0
        self._t0 = time.time()
        self._stats: dict | None = None
        self._stats_ref = None

    def setup(self, **info):
        # Once per Tuner.fit: a grid started again (sweep.fit_through_memory_kills) counts anew,
        # its trials of finished models completing at once.
        self.done = self.failed = 0
        self.running.clear()
        self.epoch.clear()
        if self.signals is not None:
            self.signals.wrap_tune()

    def on_trial_start(self, iteration, trials, trial, **info):
        self.running.add(trial.trial_id)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if "epoch" in result:  # (a trial's last report, after its attacks, has none)
            self.epoch[trial.trial_id] = int(result["epoch"])

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.running.discard(trial.trial_id)
        self.epoch.pop(trial.trial_id, None)
        self.done += 1
        self._print(force=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.running.discard(trial.trial_id)
        self.epoch.pop(trial.trial_id, None)
        self.failed += 1
        self._print(force=True)

    def on_step_end(self, iteration, trials, **info):
        self._print()

    def _print(self, force: bool = False) -> None:
        now = time.time()
        if not force and now - self._last < 10:
            return
        self._last = now
        total = f"/{self.n_trials}" if self.n_trials else ""
        print(
            f"[pp-farm {now - self._t0:6.0f}s] trials {self.done}{total} done, {len(self.running)} running"
            f"{self._epochs()}, {self.failed} failed | {self._attacks()}",
            file=sys.stderr,
            flush=True,
        )

    def _epochs(self, most: int = 6) -> str:
        """' (epoch 3/20, 20/20)': where the running trials are in training (20/20: attacking)."""
        now = sorted(self.epoch.values())
        if not now:
            return ""
        shown = ", ".join(f"{e}/{self.sweep.epochs}" for e in now[:most])
        return f" (epoch {shown}{f', +{len(now) - most} more' if len(now) > most else ''})"

    def _attacks(self) -> str:
        """The pool's counters, without ever blocking Tune's loop: ask, and read the answer
        at the next print if it has arrived."""
        if self._stats_ref is not None and ray.wait([self._stats_ref], timeout=0)[0]:
            try:
                self._stats = ray.get(self._stats_ref)
            except Exception:  # the pool is gone at shutdown; progress is best effort
                self._stats = None
            self._stats_ref = None
        if self._stats_ref is None:
            try:
                self._stats_ref = get_pool(self.sweep.name).stats.remote()
            except ValueError:  # not started yet
                pass
        s = self._stats
        if s is None:
            return "attacks: pool starting"
        return f"attacks {s['done']} done, {s['running']} running, {s['failed']} failed" + (
            f", {s['replaced']} actors replaced" if s["replaced"] else ""
        )
