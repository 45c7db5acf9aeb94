"""Episode recording in the LeRobotDataset v3.0 layout, and reading it back for replay (Qt-free).

``EpisodeRecorder`` writes; ``EpisodeReader`` reads. See ``recorder.py`` for the features recorded and
``format.py`` for the layout and its lerobot sources.
"""
from .format import CODEBASE_VERSION, DepthQuantizer
from .reader import EpisodeInfo, EpisodeReader, RecordedFrame
from .recorder import CameraSample, EpisodeRecorder, SavedEpisode, StepRecord
from .store import RecordingError

__all__ = ["CODEBASE_VERSION", "CameraSample", "DepthQuantizer", "EpisodeInfo", "EpisodeReader", "EpisodeRecorder",
           "RecordedFrame", "RecordingError", "SavedEpisode", "StepRecord"]
