"""ament_python package definition for casseg_ros (also a plain pip-installable package)."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "casseg_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*", "training", "training.*"]),
    # Read through the package (importlib.resources): the training configs, the TensorRT operator table,
    # the class colour tables.
    package_data={"training": ["configs/*.yaml", "configs/long_range/*.yaml", "configs/names/*.yaml"],
                  f"{PACKAGE}.runtime": ["data/*.json"], f"{PACKAGE}.perception": ["data/*.json"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml")),
        (f"share/{PACKAGE}/models", glob("models/*.safetensors") + glob("models/*.md")),
        (f"share/{PACKAGE}/data", glob("data/*.mcap")),
    ],
    install_requires=["setuptools"],
    zip_safe=False,
    maintainer="casseg_ros maintainers",
    maintainer_email="casseg@example.com",
    description="Context-aware semantic segmentation ROS 2 node (Swin + language fusion + graph reasoning)",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            f"casseg_ros = {PACKAGE}.ros.node_main:main",
            f"casseg-export = {PACKAGE}.export.cli:main",
            f"casseg-replay = {PACKAGE}.replay.cli:main",
            f"casseg-vocab = {PACKAGE}.vocab_cli:main",
            f"casseg-ctl = {PACKAGE}.ctl_cli:main",
        ],
    },
)
