"""Episode files: the v1 HDF5 format, a streaming crash-safe writer and a reader for every layout.

See :mod:`robokit.episodes.format` for the schema, :mod:`robokit.episodes.writer` and
:mod:`robokit.episodes.reader` for the API (contract §4).
"""

from robokit.episodes.format import validate
from robokit.episodes.reader import Episode, list_episodes, open_episode
from robokit.episodes.writer import EpisodeWriter, next_episode_index, recover_partial_episodes

__all__ = ["Episode", "EpisodeWriter", "list_episodes", "next_episode_index", "open_episode",
           "recover_partial_episodes", "validate"]
