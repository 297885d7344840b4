"""Per-session motion correction, enhancement and projections.

- :mod:`~califlow.motion.vessels`: blood-vessel (vesselness) images, vignetting removal;
- :mod:`~califlow.motion.warp`: sub-pixel warping of frame stacks, valid field of view;
- :mod:`~califlow.motion.rigid`: rigid registration to a data-built template (BV or neuron);
- :mod:`~califlow.motion.nonrigid`: non-rigid fields per low-motion batch;
- :mod:`~califlow.motion.projections`: mean, BV, correlation image (CaliAli scale) and PNR;
- :mod:`~califlow.motion.session`: the per-session chain (``correct_motion``,
  ``enhance_session``, ``run_session``) behind the workflow rules ``motion_correct`` and
  ``enhance``.
"""
