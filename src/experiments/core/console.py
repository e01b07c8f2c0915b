"""Keep the terminal for what the user asked to see: silence library warnings that need no action."""

from __future__ import annotations

import warnings

# (message regex, category): each is harmless here and would otherwise print on every run.
_HARMLESS = (
    # Lightning's pytree helper uses a torch API that torch has deprecated: nothing a user can change.
    (r".*isinstance\(treespec, LeafSpec\).*", FutureWarning),
    # In-memory datasets are cut into batches in the main process on purpose (see data.base).
    (r".*does not have many workers.*", UserWarning),
    # Tiny debug/test runs have fewer batches than log_every_n_steps.
    (r".*The number of training batches .* is smaller than the logging interval.*", UserWarning),
    # Each run folder already holds Hydra's record when the CSV logger opens it.
    (r".*Experiment logs directory .* exists and is not empty.*", UserWarning),
    (r".*Checkpoint directory .* exists and is not empty.*", UserWarning),
)


def silence_harmless_warnings() -> None:
    for message, category in _HARMLESS:
        warnings.filterwarnings("ignore", message=message, category=category)
