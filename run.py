"""Train and evaluate one method on one benchmark: ``python run.py [overrides]``.

Sweeps: ``python run.py -m method=moelora_dense,lora_full seed=42,43,44``.
Each job writes ``outputs/<experiment>/<method>/<other overrides>/seed=<seed>/``.
Several processes: ``torchrun --nproc_per_node 2 run.py device=cpu`` (docs/distributed.md).
"""

from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from moelora.harness.naming import register_resolvers
from moelora.utils.redaction import RedactingStream, secret_values

register_resolvers()  # ${moelora.dirname:...} in conf/hydra/default.yaml


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> int:
    from moelora.harness.runner import run

    hc = HydraConfig.get()
    code = run(cfg, hc.runtime.output_dir)
    if code and hc.mode == RunMode.RUN:
        sys.exit(code)
    return code


if __name__ == "__main__":
    from moelora.engine.distributed import hydra_overrides_for_rank
    from moelora.harness.hydra_callbacks import register_launchers

    # A secret typed on the command line is masked in everything printed (moelora.utils.redaction).
    if secrets := secret_values(a for a in sys.argv[1:] if "=" in a and not a.startswith("-")):
        sys.stdout = RedactingStream(sys.stdout, secrets)
        sys.stderr = RedactingStream(sys.stderr, secrets)
    register_launchers()  # submitit_local: no literal .submitit/%j folder
    sys.argv += hydra_overrides_for_rank()  # only rank 0 writes Hydra's files into the run folder
    main()
