"""Regression guard for the compiled training step: one trace per run, a graph of bounded size.

Not a timed test. It counts what makes steps slow without looking at a clock: how often the
step Keras `fit()` runs is traced (a retrace costs seconds and a fresh graph), and how many
ops its graph holds, nested function bodies (while-loop bodies, gradients) included. The
bounds are twice the sizes measured when the guard was written (BASELINE_OPS); a change
that legitimately grows the graph past them updates the table in the same commit.

The design properties asserted, as the code stands:
  MAML/FOMAML  tasks of a meta-batch run as one batched computation (`task_batch`; or in a
               tf.while_loop where they cannot): the graph does not grow with the
               meta-batch. Inner steps are unrolled (`sgd_adapt` loops in Python): each one
               adds the same number of ops.
  Reptile      tasks and inner Adam steps both run in tf.while_loops: the graph does not
               grow with either.
"""

import keras
import pytest
import tensorflow as tf

from tf_meta import build_learner, data
from tf_meta.precision import PRECISIONS

INPUT_SHAPE = (16, 16, 1)  # Conv-4 (with its BatchNorm) down to 1x1 maps, as on Omniglot
EPISODES = dict(ways=3, shots=2, query_shots=2, meta_batch_size=2)
# Ops of the traced train step (nested functions included) on EPISODES, measured with
# TF 2.21 / Keras 3.15.1 when this guard was written.
BASELINE_OPS = {"maml": 2807, "protonet": 1305, "reptile": 1809, "mann": 3219}
MAML_OPS_PER_INNER_STEP = 1400


def op_count(graph):
    """Ops of a traced graph plus those of every function in its library."""
    graph_def = graph.as_graph_def()
    return len(graph_def.node) + sum(len(f.node_def) for f in graph_def.library.function)


def compiled_learner(algo, sizes, build_optimizer=True, precision="float32"):
    """A compiled learner for episodes of `sizes` (EPISODES, plus optional inner_steps)."""
    hyper = {"inner_steps": sizes["inner_steps"]} if "inner_steps" in sizes else {}
    keras.utils.set_random_seed(0)
    learner = build_learner(algo, INPUT_SHAPE, ways=sizes["ways"], precision=precision, **hyper)
    learner.compile(optimizer=learner.meta_optimizer(1e-3, 10, 10, 1.0), jit_compile=False)
    if build_optimizer:  # Adam's slots exist before the first trace (see the xfail below)
        learner.optimizer.build(learner.trainable_variables)
    return learner


def episodes(sizes):
    sizes = {k: v for k, v in sizes.items() if k != "inner_steps"}
    return data.make_episode_dataset(data.synthetic(10, 6, INPUT_SHAPE), seed=0, **sizes)


def traced_fit(algo, build_optimizer=True, precision="float32"):
    """The graph of every trace of the train step during fit() of 2 epochs x 2 steps.

    The step is wrapped in a Python function that records the graph being built: Python
    code in a tf.function runs only while it is traced.
    """
    learner = compiled_learner(algo, EPISODES, build_optimizer, precision)
    graphs = []
    train_step = learner.train_step

    def recorded(batch):
        graphs.append(tf.compat.v1.get_default_graph())
        return train_step(batch)

    learner.train_step = recorded  # before fit() builds its train_function around it
    learner.fit(episodes(EPISODES), epochs=2, steps_per_epoch=2, verbose=0)
    return graphs


def step_ops(algo, **sizes):
    """Op count of the train step traced alone for EPISODES with `sizes` overridden.

    (The same graph as fit()'s trace, op for op, without running it: cheaper.)
    """
    sizes = {**EPISODES, **sizes}
    learner = compiled_learner(algo, sizes)
    step = tf.function(learner.train_step)
    return op_count(step.get_concrete_function(episodes(sizes).element_spec).graph)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("algo", sorted(BASELINE_OPS))
def test_fit_traces_the_step_once_into_a_bounded_graph(algo, precision):
    # float16 adds the LossScaleOptimizer's finiteness check and both of its branches.
    graphs = traced_fit(algo, precision=precision)  # 2 epochs x 2 steps
    assert len(graphs) == 1, (f"{algo} in {precision}: the train step was traced "
                              f"{len(graphs)} times in 4 steps")
    size = op_count(graphs[0])
    assert size <= 2 * BASELINE_OPS[algo], (
        f"{algo}: the train step's graph has {size} ops, over twice the "
        f"{BASELINE_OPS[algo]} measured when this guard was written")


def test_maml_graph_is_flat_in_the_meta_batch_and_linear_in_inner_steps():
    one_step = step_ops("maml")  # EPISODES: 1 inner step, meta-batch 2
    # Meta-batches 4 and 8, not 2: TF's gradients write a zeros_like of under 1,000 static
    # elements (meta-batch 2's smallest batched maps) as one constant, not a Fill.
    assert step_ops("maml", meta_batch_size=4) == step_ops("maml", meta_batch_size=8)
    sizes = [step_ops("maml", inner_steps=0), one_step, step_ops("maml", inner_steps=2)]
    per_step = sizes[1] - sizes[0]
    # Linear, not the same to the op: with the fused BatchNorm kernel the first and second
    # inner steps add 1,180 and 1,160 ops. The guard is against faster-than-linear growth.
    assert abs((sizes[2] - sizes[1]) - per_step) <= 0.05 * per_step, (
        f"ops for 0, 1, 2 inner steps: {sizes}")
    assert 0 <= per_step <= 2 * MAML_OPS_PER_INNER_STEP, (
        f"an inner step adds {per_step} ops, over twice the {MAML_OPS_PER_INNER_STEP} "
        "measured when this guard was written")


def test_reptile_graph_is_flat_in_inner_steps_and_the_meta_batch():
    five_steps = step_ops("reptile")  # EPISODES: the default 5 inner steps, meta-batch 2
    assert step_ops("reptile", inner_steps=1) == five_steps
    assert step_ops("reptile", meta_batch_size=4) == five_steps


def test_fit_traces_once_without_a_prebuilt_optimizer():
    # Adam creating its slots inside the first trace would make tf.function trace the step
    # a second time; MetaLearner builds the optimizer before fit's first step.
    assert len(traced_fit("protonet", build_optimizer=False)) == 1
