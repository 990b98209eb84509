from setuptools import find_packages, setup

setup(
    name="jboat",
    version="0.1.0",
    description="Gradient-based bilevel optimization on Jittor (BOAT/JBOAT-compatible API)",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["jboat", "jboat.*"]),
    package_data={"jboat": ["configs/*.yaml"]},  # the solver recipes: load_config("rhg")
    python_requires=">=3.8",
    install_requires=["jittor>=1.3.9", "numpy", "pyyaml"],
    extras_require={
        "test": ["pytest", "hypothesis"],
        "examples": ["matplotlib", "scikit-learn", "tqdm"],
    },
    license="Apache-2.0",
)
