"""Every obstacle to a command's output is refused before the work, or the run succeeds cleanly.

A pair writer (``measure``, ``synthetic``, ``convert -o``, :func:`qkalign.save`) writes
``PREFIX.json`` + ``PREFIX-eigdirs.<format>`` and removes the other format's
``PREFIX-eigdirs.*``; ``analyze --plot`` and ``plot`` write fixed figure names into a folder.
An obstacle (a folder, a FIFO, a file that may not be removed, a folder without write
permission, a folder under a file) is one line and exit 2 with nothing written, and refused
before the work starts: the tests replace the work by a function that fails the test if called.
What may simply be removed or created (a stale file, a dangling symlink, a missing folder) is,
and the run succeeds with exactly the new pair in place.

The tests run as root, for whom ``os.access`` always grants write permission and a sticky folder
lets any file be removed; those cases are simulated by patching ``os.access`` or ``os.geteuid``
as qkalign's checks see them (a read-only mount or ``chattr +i`` is not available here).
"""

import json
import os
import stat

import pytest

import qkalign
from qkalign.files import outputs
from qkalign.files.seed_format import save
from qkalign.testing.model_folders import write_model
from qkalign.testing.processes import run_qkalign
from qkalign.testing.refusals import one_error_line
from qkalign.weights.synthetic import SyntheticSpec, make_qkdata

OTHER = {"safetensors": "m-eigdirs.pt", "pt": "m-eigdirs.safetensors"}
WRITTEN = {"safetensors": "m-eigdirs.safetensors", "pt": "m-eigdirs.pt"}
REMOVABLE = "expected nothing, or a file qkalign may remove (an earlier run's eig-dirs file of the other format)"


def listing(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def tiny():
    return make_qkdata(SyntheticSpec(4, 2, 1, 4, 16, topk=3, seed=5))


@pytest.fixture()
def no_work(monkeypatch):
    """Measuring, making a synthetic model and loading a pair fail the test: a refusal comes first."""
    def started(*args, **kwargs):
        raise AssertionError("the work started before the output was refused")
    for target in ("qkalign.weights.measure.measure", "qkalign.weights.synthetic.make_qkdata",
                   "qkalign.files.seed_format.load"):
        monkeypatch.setattr(target, started)


@pytest.fixture()
def commands(tmp_path, written_small):
    """{name: argument list without -o/--format} of every pair-writing command."""
    model = write_model(tmp_path / "model", "llama").folder
    return {"measure": ["measure", model, "--quiet"], "synthetic": ["synthetic", "small"],
            "convert": ["convert", written_small[0]]}


def _fifo(path):
    os.mkfifo(path)


def _full_folder(path):
    path.mkdir()
    (path / "kept.txt").write_text("mine")


OBSTACLES = {"empty folder": (lambda p: p.mkdir(), "found a directory"),
             "folder with files": (_full_folder, "found a directory"),
             "FIFO": (_fifo, "found a FIFO")}


@pytest.mark.parametrize("command, file_format", [("measure", "safetensors"), ("measure", "pt"),
                                                  ("synthetic", "safetensors"), ("synthetic", "pt"),
                                                  ("convert", "safetensors")])  # convert writes safetensors only
@pytest.mark.parametrize("obstacle", sorted(OBSTACLES))
def test_an_obstacle_at_the_other_format_path_is_refused_before_the_work(cli, commands, no_work, tmp_path,
                                                                         command, obstacle, file_format):
    """The issue's case (measure, default format, ``PREFIX-eigdirs.pt`` a folder) and its kin: the
    pair used to be written and the run then failed on the removal."""
    out = tmp_path / "out"
    out.mkdir()
    make, found = OBSTACLES[obstacle]
    make(out / OTHER[file_format])
    before = listing(out)
    args = commands[command] + ["-o", out / "m"] + (["--format", file_format] if command != "convert" else [])
    one_error_line(cli(*args), f"{out / OTHER[file_format]}: -o: {REMOVABLE}, {found}")
    assert listing(out) == before


def test_a_refused_prefix_leaves_the_previous_pair(no_work, tmp_path):
    """From Python too: ``qkalign.save`` refuses before it writes, and the old pair stays whole."""
    old = save(tiny(), tmp_path / "m")
    (tmp_path / "m-eigdirs.pt").mkdir()
    before = {p: p.read_bytes() for p in old}
    with pytest.raises(qkalign.InputError, match="m-eigdirs.pt: -o: .*found a directory"):
        qkalign.save(tiny(), tmp_path / "m")
    assert {p: p.read_bytes() for p in old} == before
    assert listing(tmp_path) == ["m-eigdirs.pt", "m-eigdirs.safetensors", "m.json"]


@pytest.mark.parametrize("file_format", ["safetensors", "pt"])
def test_an_output_symlinked_onto_the_other_format_path_is_refused(cli, no_work, tmp_path, file_format):
    """``m-eigdirs.safetensors -> m-eigdirs.pt``: the new file would land where the removal then takes it."""
    (tmp_path / WRITTEN[file_format]).symlink_to(OTHER[file_format])
    line = one_error_line(cli("synthetic", "small", "-o", tmp_path / "m", "--format", file_format))
    assert line.endswith(f"found the file the symlink {tmp_path / WRITTEN[file_format]} writes")
    assert listing(tmp_path) == [WRITTEN[file_format]]


def _stale_file(folder):
    (folder / "m-eigdirs.pt").write_text("an earlier run's")
    os.chmod(folder / "m-eigdirs.pt", 0o444)  # removing needs the folder's permission, not the file's


def _dangling_link(folder):
    (folder / "m-eigdirs.pt").symlink_to(folder / "missing" / "gone.pt")


def _link_to_a_kept_file(folder):
    (folder / "kept.pt").write_text("kept")
    (folder / "m-eigdirs.pt").symlink_to("kept.pt")


def _link_to_a_folder(folder):
    (folder / "kept").mkdir()
    (folder / "m-eigdirs.pt").symlink_to("kept")


@pytest.mark.parametrize("make, left", [(_stale_file, []), (_dangling_link, []), (_link_to_a_kept_file, ["kept.pt"]),
                                        (_link_to_a_folder, ["kept"])])
def test_what_may_be_removed_is_removed_after_the_pair_lands(cli, tmp_path, make, left):
    """A file or a symlink (dangling, or to a file or folder, which stays) at the other format's path."""
    make(tmp_path)
    proc = cli("synthetic", "small", "-o", tmp_path / "m")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert listing(tmp_path) == sorted(["m-eigdirs.safetensors", "m.json"] + left)
    assert qkalign.load(tmp_path / "m.json").eigdirs_path == str(tmp_path / "m-eigdirs.safetensors")
    if left == ["kept.pt"]:
        assert (tmp_path / "kept.pt").read_text() == "kept"


def test_missing_folders_are_created(cli, tmp_path):
    """A missing parent of the prefix, and a symlinked output pointing into a missing folder."""
    assert cli("synthetic", "small", "-o", tmp_path / "a" / "b" / "m").returncode == 0
    assert listing(tmp_path / "a" / "b") == ["m-eigdirs.safetensors", "m.json"]
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "m.json").symlink_to(tmp_path / "elsewhere" / "deeper" / "target.json")
    assert cli("synthetic", "small", "-o", tmp_path / "c" / "m").returncode == 0
    assert (tmp_path / "c" / "m.json").is_symlink() and (tmp_path / "elsewhere" / "deeper" / "target.json").is_file()
    assert qkalign.load(tmp_path / "c" / "m.json").num_layers == qkalign.load(tmp_path / "a" / "b" / "m.json").num_layers


def test_a_prefix_under_a_file_is_refused(cli, no_work, tmp_path):
    (tmp_path / "f").write_text("")
    one_error_line(cli("synthetic", "small", "-o", tmp_path / "f" / "sub" / "m"),
                   f"{tmp_path / 'f'}: -o: expected a folder for the output, found a file")
    assert listing(tmp_path) == ["f"]


def _deny_writes(monkeypatch, folder):
    """``os.access`` as a non-root user sees ``folder`` without write permission (see the module docstring)."""
    real = os.access
    folder = os.path.realpath(folder)
    monkeypatch.setattr(outputs.os, "access", lambda path, mode: False if os.path.realpath(path) == folder
                        and mode & os.W_OK else real(path, mode))


def test_a_missing_folder_under_a_read_only_one_is_refused(cli, no_work, tmp_path, monkeypatch):
    """Simulated: the nearest existing folder is not writable, so the prefix's folder cannot be made."""
    _deny_writes(monkeypatch, tmp_path)
    one_error_line(cli("synthetic", "small", "-o", tmp_path / "new" / "m"),
                   f"{tmp_path}: -o: expected a writable folder for the output, found no write permission")
    assert listing(tmp_path) == []


def _outputs_linked_elsewhere(tmp_path):
    """A read-only-to-be folder whose pair names are symlinks into a writable folder, and a stale .pt."""
    shown, real = tmp_path / "shown", tmp_path / "real"
    shown.mkdir()
    real.mkdir()
    for name in ("m.json", "m-eigdirs.safetensors"):
        (shown / name).symlink_to(real / name)
    (shown / "m-eigdirs.pt").write_text("an earlier run's")
    return shown, real


def test_an_other_format_file_in_a_read_only_folder_is_refused(cli, no_work, tmp_path, monkeypatch):
    """Simulated write permission (see the module docstring): the pair itself can be written through its
    symlinks, but the stale .pt cannot be removed from its folder; before, the pair was written first."""
    shown, real = _outputs_linked_elsewhere(tmp_path)
    _deny_writes(monkeypatch, shown)
    one_error_line(cli("synthetic", "small", "-o", shown / "m"),
                   f"{shown / 'm-eigdirs.pt'}: -o: {REMOVABLE}, found no permission to remove it from its folder")
    assert listing(real) == []


def test_another_users_file_in_a_sticky_folder_is_refused(cli, no_work, tmp_path, monkeypatch):
    """Simulated user id (see the module docstring): in a sticky folder (``/tmp``) a user may not remove
    another user's file even with the folder's write permission."""
    os.chmod(tmp_path, 0o1777)
    (tmp_path / "m-eigdirs.pt").write_text("root's")
    monkeypatch.setattr(outputs.os, "geteuid", lambda: 4242)
    one_error_line(cli("synthetic", "small", "-o", tmp_path / "m"), "found no permission to remove it from its folder")
    assert listing(tmp_path) == ["m-eigdirs.pt"]
    monkeypatch.undo()  # root (as the file's owner would) may remove it, and the work runs this time
    assert cli("synthetic", "small", "-o", tmp_path / "m").returncode == 0


def _old_pt_pair(tmp_path):
    old = save(tiny(), tmp_path / "m", file_format="pt")
    return {p.name: p.read_bytes() for p in old}


def test_a_removal_that_fails_at_the_end_writes_nothing(cli, tmp_path, monkeypatch):
    """A race: the checks passed, then a folder appears at the other format's path while the pair is
    computed. The run fails with one line and the old pair is as it was, with no new file."""
    old = save(tiny(), tmp_path / "m")
    before = {p.name: p.read_bytes() for p in old}
    real = outputs._commit

    def commit_after_a_race(renames, remove):
        (tmp_path / "m-eigdirs.pt").mkdir()
        return real(renames, remove)
    monkeypatch.setattr(outputs, "_commit", commit_after_a_race)
    one_error_line(cli("synthetic", "small", "-o", tmp_path / "m"),
                   f"-o: expected a writable output prefix, found Is a directory ({tmp_path / 'm-eigdirs.pt'})")
    assert listing(tmp_path) == ["m-eigdirs.pt", "m-eigdirs.safetensors", "m.json"]
    assert {p.name: p.read_bytes() for p in old} == before


def test_a_rename_that_fails_puts_the_other_format_file_back(tmp_path, monkeypatch):
    """The other format's file is moved aside before the renames, so a failing rename undoes it."""
    before = _old_pt_pair(tmp_path)
    real = os.replace

    def replace(src, dst):
        if str(dst).endswith("m-eigdirs.safetensors"):
            raise OSError(28, "No space left on device")
        real(src, dst)
    monkeypatch.setattr(outputs.os, "replace", replace)
    with pytest.raises(OSError, match="No space left"):
        save(tiny(), tmp_path / "m")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_a_moved_aside_file_that_cannot_be_removed_is_a_warning(tmp_path, monkeypatch, capsys):
    """The pair is in place when the moved-aside file is removed: a failure then is not the run's."""
    _old_pt_pair(tmp_path)
    real = os.unlink

    def unlink(path, *args, **kwargs):
        if ".m-eigdirs.pt." in str(path):
            raise PermissionError(1, "Operation not permitted")
        real(path, *args, **kwargs)
    monkeypatch.setattr(os, "unlink", unlink)
    json_path, _ = save(tiny(), tmp_path / "m")
    monkeypatch.undo()
    warning = capsys.readouterr().err
    assert warning.startswith(f"qkalign: warning: {tmp_path / 'm-eigdirs.pt'} was moved to ")
    assert warning.endswith("but not removed (Operation not permitted); remove it by hand\n")
    assert qkalign.load(json_path).eigdirs_path.endswith("m-eigdirs.safetensors")
    names = sorted(os.listdir(tmp_path))
    assert len(names) == 3 and names[1:] == ["m-eigdirs.safetensors", "m.json"] and names[0] in warning


@pytest.mark.parametrize("command", ["analyze", "plot"])
def test_a_folder_at_a_figure_name_is_refused_before_the_analysis(cli, written_small, tmp_path, command, monkeypatch):
    """``--plot DIR`` with ``DIR/to_anchor.png`` a folder: before, the report was printed and the
    figures before it written, then the run failed."""
    result = tmp_path / "result.json"
    assert cli("analyze", written_small[0], "--json", result).returncode == 0
    figures = tmp_path / "figs"
    (figures / "to_anchor.png").mkdir(parents=True)
    monkeypatch.setattr("qkalign.stats.analyze.analyze", lambda *a, **k: pytest.fail("the analysis started"))
    args = ["analyze", written_small[0], "--plot", figures] if command == "analyze" else ["plot", result, figures]
    proc = cli(*args)
    option = "--plot" if command == "analyze" else "out_dir"
    one_error_line(proc, f"{figures / 'to_anchor.png'}: {option}: expected a file path, found a directory")
    assert proc.stdout == "" and listing(figures) == ["to_anchor.png"]


@pytest.mark.slow
def test_measure_with_a_folder_at_the_pt_path_writes_nothing(tmp_path):
    """The issue's run, as a user types it."""
    model = write_model(tmp_path / "model", "llama").folder
    out = tmp_path / "out"
    (out / "m-eigdirs.pt").mkdir(parents=True)
    proc = run_qkalign("measure", model, "-o", out / "m", "--quiet")
    one_error_line(proc, f"{out / 'm-eigdirs.pt'}: -o: {REMOVABLE}, found a directory")
    assert proc.stdout == "" and listing(out) == ["m-eigdirs.pt"]
    assert json.loads((model / "config.json").read_text())  # the model folder is untouched
    assert stat.S_ISDIR(os.stat(out / "m-eigdirs.pt").st_mode)
