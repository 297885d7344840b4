"""Input and output: movie readers, Zarr stores, exports (NWB, Inscopix, tables).

``open_movie`` opens any supported recording as a streaming ``MovieSource``; ``ingest``
(in :mod:`califlow.io.ingest`) turns one into the downsampled ``ingest.zarr`` store.
"""

from califlow.io.readers import open_movie, probe_recording
from califlow.io.sources import MovieSource

__all__ = ["open_movie", "probe_recording", "MovieSource"]
