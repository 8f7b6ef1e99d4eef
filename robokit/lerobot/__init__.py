"""LeRobotDataset v3.0 out and in.

    from robokit.lerobot.export import export_lerobot
    from robokit.lerobot.importer import import_lerobot
    export_lerobot("data/pick", "exports/pick", repo_id="lab/pick")    # robokit episodes -> LeRobot v3
    import_lerobot("exports/pick", "data/pick_again")                   # LeRobot v3 -> robokit episodes

:mod:`robokit.lerobot.layout` holds the v3 layout (paths, feature names, version checks, the
feature mapping), :mod:`robokit.lerobot.export` and :mod:`robokit.lerobot.importer` the two
directions, :mod:`robokit.lerobot.tables` the parquet tables (pyarrow), :mod:`robokit.lerobot.video`
the MP4 files (PyAV), :mod:`robokit.lerobot.stats` LeRobot's normalisation statistics and
:mod:`robokit.lerobot.summary` what ``robokit inspect`` shows of a LeRobot folder. pyarrow and PyAV
are the optional extra ``robokit[lerobot]``, imported only when a LeRobot folder is written or read;
this package imports nothing heavy until then, so the CLI and the trainer can check for a LeRobot
folder cheaply.
"""
