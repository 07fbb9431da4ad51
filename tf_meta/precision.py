"""Training precision: float32, or Keras mixed precision in bfloat16 or float16.

A learner's precision is its Keras dtype policy: "float32", or "mixed_bfloat16" /
"mixed_float16", whose layers keep float32 variables and compute in the low precision.
tf_meta's own arithmetic between networks stays float32 whatever the precision: the
learners cast network outputs to float32 (`full_precision`) before prototypes and distances,
relation pairs' sums, memory reads and writes, inner-loop updates of fast weights (their
gradients arrive in float32 through the casts of the float32 weights), losses and
softmax. float16 training scales the loss (Keras's LossScaleOptimizer, which skips a step
whose gradients overflow); bfloat16 has float32's exponent range and needs none.

Which precision on which hardware: docs/PERFORMANCE.md, "Precision".
"""

import keras
import tensorflow as tf

# precision -> its Keras dtype policy: the ones a run trains in (`--precision`), and float64
# for the library's finite-difference checks of second-order gradients.
POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16",
            "float64": "float64"}
PRECISIONS = ("float32", "bfloat16", "float16")


def policy_of(precision):
    """The Keras dtype policy name of `precision` (None: the global policy's precision).

    Raises:
      ValueError: one line, an unknown precision.
    """
    if precision is None:
        name = keras.config.dtype_policy().name
        precision_of(name)  # refuses a global policy tf_meta cannot train in
        return name
    if precision not in POLICIES:
        raise ValueError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    return POLICIES[precision]


def precision_of(policy_name):
    """The precision a Keras dtype policy name trains in.

    Raises:
      ValueError: one line, a policy that is not one of `POLICIES` (e.g. "bfloat16",
        whose variables would be bfloat16 too: weight updates below their 8-bit
        mantissa's resolution would be lost).
    """
    for precision, name in POLICIES.items():
        if name == policy_name:
            return precision
    raise ValueError(f"tf_meta trains in the dtype policies {', '.join(POLICIES.values())}; "
                     f"the Keras dtype policy is {policy_name!r}: set precision to one of "
                     f"{', '.join(PRECISIONS)}")


def set_policy(network, policy_name):
    """Sets the dtype policy of `network` and of every layer nested in it; returns it.

    Variables already built stay float32 (the mixed policies' variable dtype); the layers
    compute in the policy's compute dtype from their next call.
    """
    for layer in network._flatten_layers(include_self=True, recursive=True):
        layer.dtype_policy = policy_name
    return network


def full_precision(x):
    """x in float32 if it is float16 or bfloat16, else x itself (float32, or float64 in a
    gradient check): where a network's output enters the learner's own arithmetic."""
    return tf.cast(x, tf.float32) if x.dtype in (tf.float16, tf.bfloat16) else x
