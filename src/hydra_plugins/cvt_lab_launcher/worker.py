"""One job of the pool launcher, in its own process: ``python -m hydra_plugins.cvt_lab_launcher.worker PAYLOAD``."""

from __future__ import annotations

import sys


def main(payload_path: str) -> int:
    import cloudpickle
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.singleton import Singleton
    from hydra.core.utils import JobStatus, run_job, setup_globals

    with open(payload_path, "rb") as f:
        payload = cloudpickle.load(f)
    if payload.get("threads") and "torch" in sys.modules:  # a job that never imports torch need not pay for it:
        import torch  # OMP_NUM_THREADS (set by the launcher) sizes torch's pool when it is imported later

        torch.set_num_threads(int(payload["threads"]))
    setup_globals()
    Singleton.set_state(payload["singleton"])
    HydraConfig.instance().set_config(payload["config"])
    ret = run_job(hydra_context=payload["hydra_context"], task_function=payload["task_function"],
                  config=payload["config"], job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
    try:
        data = cloudpickle.dumps(ret)
    except Exception as e:  # noqa: BLE001 - e.g. an exception that cannot be pickled: keep its message
        if ret.status == JobStatus.FAILED:
            ret.return_value = RuntimeError(f"{type(ret._return_value).__name__}: {ret._return_value}")
        else:
            ret.return_value = f"(return value not picklable: {e})"
        data = cloudpickle.dumps(ret)
    with open(payload["ret_path"], "wb") as f:
        f.write(data)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
