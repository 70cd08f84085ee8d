# setuptools needs this file only for cffi's `cffi_modules` hook: it builds
# hwnic._vfio from native/ (cffi API mode, out of line) against <linux/vfio.h>.
from setuptools import setup

setup(cffi_modules=["native/build_vfio.py:ffibuilder"])
