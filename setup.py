"""Packaging for tf_lrp: Layer-wise Relevance Propagation for Keras 3 on TensorFlow."""

from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="tf_lrp",
    version="0.1.0",
    description="Layer-wise Relevance Propagation (LRP) for Keras 3 models on TensorFlow",
    long_description=(Path(__file__).parent / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["tf_lrp", "tf_lrp.*"]),
    python_requires=">=3.10",
    install_requires=[
        # The GPU-capable build on purpose (never tensorflow-cpu): users run LRP on GPUs.
        "tensorflow>=2.16",
        "keras>=3.0",
        "numpy>=1.26",
        "h5py>=3.8",
        "matplotlib>=3.7",
        "pillow>=10.0",
        "tqdm>=4.60",
        # TF >= 2.21 no longer installs TensorBoard; tf.summary needs it.
        "tensorboard>=2.16",
        "scikit-learn>=1.3",
        # tf_lrp.evaluate: ROAD's sparse solve, blur removal, Spearman ranks (also a
        # dependency of scikit-learn; named because tf_lrp imports it directly)
        "scipy>=1.10",
    ],
    extras_require={
        # tf_lrp.ray and tf-lrp explain --ray: Ray Data (actor pools, retries, spilling)
        "ray": ["ray[data]>=2.9"],
        # tf_lrp.hub (explain_text) and KerasHub models: from_preset(local dir), tokenizers
        "hub": ["keras-hub>=0.32"],
        # the test suite runs the Ray and KerasHub tests too (local Ray, tiny KerasHub configs)
        # the generation page is tested in Debian's Chromium, driven by Playwright (no browser
        # download: the tests launch /usr/bin/chromium)
        "test": ["pytest>=7", "tf-keras>=2.16", "ruff>=0.5", "ray[data]>=2.9", "pandas>=1.5",
                 "keras-hub>=0.32", "playwright>=1.40"],
    },
    entry_points={"console_scripts": ["tf-lrp=tf_lrp.cli:main"]},
)
