"""``python -m cvt_lab`` / ``cvt-lab``: the Hydra app. Everything is built from the config by ``instantiate``.

    python -m cvt_lab                                   # cvt_tiny on digits, CPU, offline
    python -m cvt_lab model=cvt13 data=imagefolder data.root=/data/imagenet recipe=imagenet trainer=gpu
    python -m cvt_lab mode=eval checkpoint=CvT-13-224x224-IN-1k.pth model=cvt13 data=imagefolder ...
    python -m cvt_lab experiment=ablation_pos_embed -m  # a paper table as a sweep
"""

from __future__ import annotations

import logging
import sys
import time

import hydra
import lightning.pytorch  # noqa: F401  imported before Hydra configures logging, so conf/config.yaml's levels apply
from omegaconf import DictConfig

from cvt_lab.config import register_configs
from cvt_lab.paths import config_dir

log = logging.getLogger("cvt_lab")


def summary(results: dict) -> str:
    def pct(key: str) -> str:
        return "n/a" if results.get(key) is None else f"{100 * results[key]:.2f}%"

    return (
        f"{results['model']} on {results['data']}: test top-1 {pct('test/acc1')}, top-5 {pct('test/acc5')}, "
        f"val top-1 {pct('val/acc1')} | {results['params'] / 1e6:.3f}M params, {results['macs'] / 1e9:.4f} GMACs "
        f"at {results['image_size']} | {results['epochs']} epochs in {results['wall_s']:.1f}s"
    )


def make_task(process_started: float):
    """The Hydra task. A job that fails records its error in results.json (status "failed"); a single run
    then exits non-zero with one message, while a sweep (-m) goes on with its other jobs.

    The first job's wall time counts from the process start (start-up included); later jobs of a sweep
    that share the process count from their own start."""
    first_job = [True]

    def task(cfg: DictConfig) -> dict:
        started = process_started if first_job[0] else time.time()
        first_job[0] = False
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        from cvt_lab.train import BAD_INPUT, record_failure, run

        hc = HydraConfig.get()
        run_dir, overrides = hc.runtime.output_dir, list(hc.overrides.task)
        try:
            results = run(cfg, run_dir, overrides, started=started)
        except Exception as e:  # noqa: BLE001 - every failure is recorded; see the docstring
            results = record_failure(run_dir, overrides, e)
            if isinstance(e, BAD_INPUT):
                log.error("error: %s", results["error"])
            else:
                log.exception("job failed")
            if hc.mode != RunMode.MULTIRUN:
                print(f"error: {results['error']}", file=sys.stderr)
                print(f"run directory: {run_dir}")
                sys.exit(2 if isinstance(e, BAD_INPUT) else 1)
            return results
        print(summary(results))
        print(f"run directory: {run_dir}")
        return results

    return task


def main() -> None:
    started = time.time()  # start-up counts in the run's wall time
    register_configs()
    hydra.main(config_path=str(config_dir()), config_name="config", version_base="1.3")(make_task(started))()


if __name__ == "__main__":
    main()
