"""`robokit sim snapshot` and `robokit sim expert` from the command line."""

import cv2
import pytest

from robokit.cli import main


def test_snapshot_writes_both_cameras_side_by_side(tmp_path, capsys):
    out = tmp_path / "scene.png"
    main(["sim", "snapshot", "--out", str(out), "--seed", "2", "--size", "60x80"])
    image = cv2.imread(str(out))
    assert image is not None and image.shape == (60, 160, 3)
    assert image[:, :80].std() > 5 and image[:, 80:].std() > 5
    assert "scene.png" in capsys.readouterr().out


def test_snapshot_of_a_multi_instruction(tmp_path):
    out = tmp_path / "multi.png"
    main(["sim", "snapshot", "--out", str(out), "--task", "put the green cube on the yellow plate", "--size", "48x64"])
    assert cv2.imread(str(out)).shape == (48, 128, 3)


def test_bad_inputs_exit_with_code_2(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    for args in (["--task", "juggle"], ["--size", "big"], ["--out", str(tmp_path / "file" / "x.png")]):
        with pytest.raises(SystemExit) as exc:
            main(["sim", "snapshot", "--out", str(tmp_path / "x.png"), *args])
        assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "juggle" in err and "cannot create the output folder" in err


def test_expert_command_prints_success_rate(capsys):
    main(["sim", "expert", "--seeds", "2", "--task-set", "multi", "--start-seed", "4"])
    out = capsys.readouterr().out
    assert "expert success: 2/2" in out
    assert "put the red cube in the blue bowl" in out
