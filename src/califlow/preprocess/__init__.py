"""Per-pixel and per-frame preprocessing of one-photon movies (arrays in, arrays out).

- :mod:`~califlow.preprocess.downsample`: spatial/temporal downsampling used by ingest;
- :mod:`~califlow.preprocess.temporal`: running median / min / max along time (MATLAB windows);
- :mod:`~califlow.preprocess.detrend`: running-minimum-of-running-median baseline removal,
  block and streaming forms;
- :mod:`~califlow.preprocess.noise`: per-pixel noise (Welch PSD, ``GetSn``) and sampled-window
  estimates;
- :mod:`~califlow.preprocess.enhance`: MIN1PIPE neuron enhancement;
- :mod:`~califlow.preprocess.filters`: OpenCV filters applied to whole frame stacks.
"""
