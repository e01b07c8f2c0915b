"""A Hydra callback that ends every study (``conf/experiment/<study>.yaml``) with its comparison.

``on_multirun_end`` runs :func:`experiments.compare.compare` on the sweep folder, so the study's
figure, tables, degradation verdict and ``report.html`` are in ``<sweep folder>/compare/``. A failure
of the comparison is logged and never fails the sweep (the runs are already on disk: run
``python -m experiments.compare <sweep folder>`` by hand).

``sweep_dir`` (optional): where the study's sweep goes (``outputs/studies/<name>/<time>``).
``conf/train.yaml`` lists ``_self_`` after ``experiment``, so its own ``hydra.sweep.dir`` wins over an
experiment's; the callback therefore applies the study's folder at ``on_multirun_start`` (as a Hydra
override, so every job of the sweep gets it too), unless ``hydra.sweep.dir`` was given on the command
line. Imports nothing heavy: Hydra instantiates it before the sweep starts.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, open_dict, read_write

log = logging.getLogger(__name__)


class CompareStudy(Callback):
    def __init__(self, by: list[str] | None = None, html: bool = True, x: str = "epoch", title: str | None = None,
                 sweep_dir: str | None = None) -> None:
        self.by = [str(k) for k in by] if by else None
        self.html, self.x, self.title = bool(html), str(x), title
        self.sweep_dir = str(sweep_dir) if sweep_dir else None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not self.sweep_dir:
            return
        given = [o for o in config.hydra.overrides.hydra if str(o).lstrip("+~").startswith("hydra.sweep.dir=")]
        if given:
            return
        target = self.sweep_dir.replace("'", "")
        with read_write(config), open_dict(config):
            config.hydra.sweep.dir = target
            config.hydra.overrides.hydra.append(f"hydra.sweep.dir='{target}'")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from experiments.studies.compare import compare

        sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            comparison = compare([sweep_dir], by=self.by, html=self.html, out=sweep_dir / "compare", x=self.x,
                                 title=self.title or f"Study {sweep_dir.parent.name}/{sweep_dir.name}")
        except Exception as error:  # the runs are on disk; the comparison can be redone by hand
            log.error(f"The study's comparison failed ({type(error).__name__}: {error}); run "
                      f"`python -m experiments.compare {sweep_dir} --html` to retry.")
            return
        log.info(f"Study comparison: {comparison.out}")
