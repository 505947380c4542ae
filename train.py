"""Train TinyGPT: compose the config with Hydra, instantiate, fit, summarise.

python train.py                                  # the notebook's dense model on TinyShakespeare
python train.py -m model.n_layer=2,4 seed=1,2    # a sweep, one run directory per job

The run itself is tinygpt.cli.train (tests call its train() in-process).
"""

import time

LAUNCHED = time.time()  # before the heavy imports: wall time counts from launch

from tinygpt.cli.train import main  # noqa: E402

if __name__ == "__main__":
    main(launched=LAUNCHED)
