"""Run micranet_utils.train.runs in a child process, for the kill-and-resume and torchrun tests.

usage: python train_subprocess.py train DATA RUN SETTINGS_JSON [KILL_EPOCH KILL_BATCH]
       python train_subprocess.py resume RUN
       (under torchrun) python train_subprocess.py train DATA RUN SETTINGS_JSON --dump DIR

With KILL_EPOCH and KILL_BATCH the process sends itself SIGKILL after that
training batch (no cleanup of any kind, like a power cut). With --dump each rank
writes its final weights to DIR/rank<r>.npz.
"""

import json
import os
import signal
import sys

import numpy as np
import torch

torch.set_num_threads(1)

from micranet_utils.train import runs as training


def main(argv):
    dump = None
    if "--dump" in argv:
        at = argv.index("--dump")
        dump, argv = argv[at + 1], argv[:at] + argv[at + 2:]
    if argv[0] == "resume":
        result = training.resume(argv[1], progress=False)
    else:
        data, run, settings = argv[1], argv[2], json.loads(argv[3])
        callback = None
        if len(argv) > 4:
            kill_at = (int(argv[4]), int(argv[5]))

            def callback(info):
                if info["event"] == "batch" and (info["epoch"], info["batch"]) == kill_at:
                    os.kill(os.getpid(), signal.SIGKILL)
        result = training.train(data, run, callback=callback, **settings)
    if dump:
        rank = os.environ.get("RANK", "0")
        np.savez(os.path.join(dump, f"rank{rank}.npz"),
                 **{k: v.detach().cpu().numpy() for k, v in result.model.state_dict().items()})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
