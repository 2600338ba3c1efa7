"""Reproducible benchmarks of sergeant, side by side with its peers.

``python -m benchmark --help`` lists the sections and options; the package
starts its own redis-server and installs each peer into its own venv under
``benchmark/.venvs``. Modules: ``redis`` (ours against sergeant 0.27.0),
``codecs`` and ``sqlite`` (small stand-alone measurements), ``peers/`` (one
driver script per library).
"""
