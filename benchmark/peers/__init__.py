"""One driver script per library (``lib_<key>.py``), run by that library's venv.

They are scripts, not modules of this package: each runs with this folder as its
first import path, so a driver imports ``_common`` and its own library only, and
never this repository's ``sergeant`` by accident (the 0.27.0 driver must get the
installed one).
"""
