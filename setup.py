"""tf-meta: meta-learning for TensorFlow/Keras (MAML, Reptile, ProtoNet, ... to TF Serving)."""

from setuptools import find_packages, setup

ABOUT = {}  # the version, from its one home
exec(open("tf_meta/version.py", encoding="utf-8").read(), ABOUT)

setup(
    name="tf-meta",
    version=ABOUT["VERSION"],
    description="Meta-learning for TensorFlow/Keras: episodic data, learners, TF Serving export",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["tf_meta", "tf_meta.*"]),
    package_data={"tf_meta.data": ["omniglot_vinyals_split.json"]},
    entry_points={"console_scripts": ["tf-meta=tf_meta.cli:main"]},
    install_requires=[
        "tensorflow>=2.16",  # Keras 3
        "tensorflow-datasets>=4.9",
        "numpy",
        "absl-py",
        # Needed at run time but not declared by the packages that use them:
        "importlib_resources",  # tensorflow-datasets' omniglot builder
        "tensorboard",  # keras.callbacks.TensorBoard (tf.summary) since TF 2.20
    ],
    # plots: tf_meta.curves.plot, the learning-curve PNGs of docs/ (nothing else needs it)
    # test: tensorflow-serving-api for the gRPC PredictRequests of tests/test_serving_contract.py
    # (its versions follow TensorFlow's: 2.21.0 requires tensorflow>=2.21, so with an older
    # TensorFlow install the matching one, e.g. tensorflow-serving-api==2.20.*); build for
    # the wheel tests/test_cli.py builds and installs
    extras_require={"plots": ["matplotlib"],
                    "test": ["pytest", "pytest-xdist", "matplotlib", "tensorflow-serving-api",
                             "build"]},
)
