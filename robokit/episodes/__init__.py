"""Episode files: the v1 HDF5 format, a streaming crash-safe writer and a reader for every layout.

See :mod:`robokit.episodes.format` for the schema, :mod:`robokit.episodes.writer` and
:mod:`robokit.episodes.reader` for the API, :mod:`robokit.episodes.recovery` for what happens to an
interrupted recording.
"""

from robokit.episodes.files import next_episode_index
from robokit.episodes.format import validate
from robokit.episodes.reader import Episode, list_episodes, open_episode
from robokit.episodes.recovery import recover_partial_episodes
from robokit.episodes.writer import EpisodeWriter

__all__ = ["Episode", "EpisodeWriter", "list_episodes", "next_episode_index", "open_episode",
           "recover_partial_episodes", "validate"]
