"""Package discovery only; everything else is in pyproject.toml.

find_packages walks export/ (every bitexport subpackage ships without being listed); the kernels'
Python face lives in runtime_ops/ and is added by name (package-dir maps it).
"""

from setuptools import find_packages, setup

setup(packages=find_packages("export", include=["bitexport", "bitexport.*"]) + ["bitexport.runtime_ops"])
