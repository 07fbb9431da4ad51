"""Meta-trains a tf_meta learner, evaluates it on fixed test episodes, exports it for TF Serving.

The same as `tf-meta train` (tf_meta/run_command.py), for a checkout:

  python train.py --algo=protonet                 # Omniglot, vinyals split, paper protocol
  python train.py --algo=maml --steps=2000        # 5-way 1-shot MAML, exact second order
  python train.py --flagfile=runs/protonet/flags.txt --ways=20 --eval_only
"""

from tf_meta import run_command

if __name__ == "__main__":
    run_command.main(command="train", prog="train.py", doc=__doc__)
