"""Files a user names never run code without the explicit opt-in (--trust-pickle / trusted=True).

Each crafted file carries a ``__reduce__`` that calls ``os.system("touch MARKER")``; loading it through
any entry point must leave MARKER absent. ``test_payloads_are_live`` proves the payloads do run when
unpickled the unsafe way, so an absent marker means "refused", not "broken payload".
"""

import os
import pickle
import re
import shlex
import zipfile
from pathlib import Path

import pytest
import torch

from ilsgan import checkpoints as ck
from ilsgan import evaluate, segment, train

from _train_tiny import TINY_CFG_ARGS


class _Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(self.marker)}",))


def _raw_pickle(path, marker):
    """A plain pickle (torch's legacy, non-zip format) whose unpickling runs the payload."""
    with open(path, "wb") as f:
        pickle.dump({"format": ck.FORMAT, "version": 1, "config": {}, "G": _Payload(marker)}, f, protocol=2)
    return path


def _torch_zip(path, marker):
    """A torch.save zip archive that looks like our checkpoint, with a malicious global inside."""
    torch.save({"format": ck.FORMAT, "version": 1, "config": {"resolution": 16}, "G": _Payload(marker),
                "D": {}, "G_ema": {}}, path)
    return path


def _torchscript_zip(path, marker):
    """A TorchScript archive whose data.pkl / constants.pkl were replaced by the payload."""
    class M(torch.nn.Module):
        def forward(self, x):
            return x
    ok = Path(str(path) + ".ok")
    torch.jit.script(M()).save(str(ok))
    with zipfile.ZipFile(ok) as zi, zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zo:
        for info in zi.infolist():
            data = zi.read(info.filename)
            if info.filename.endswith(("data.pkl", "constants.pkl")):
                data = pickle.dumps(_Payload(marker), protocol=2)
            zo.writestr(info, data)
    return path


MAKERS = {"raw_pickle": _raw_pickle, "torch_zip": _torch_zip}


@pytest.fixture(params=sorted(MAKERS))
def evil(request, tmp_path):
    marker = tmp_path / "PWNED"
    path = MAKERS[request.param](tmp_path / "evil.pt", marker)
    return path, marker


def test_payloads_are_live(tmp_path):
    for name, make in MAKERS.items():
        marker = tmp_path / f"m-{name}"
        path = make(tmp_path / f"{name}.pt", marker)
        try:  # the unsafe way: the payload runs (a raw pickle then fails torch's magic-number check)
            torch.load(path, weights_only=False)
        except RuntimeError:
            pass
        assert marker.exists(), name


def test_python_api_loaders_run_no_code(evil):
    path, marker = evil
    for load in (ck.load_checkpoint, ck.load_generator, evaluate.load_generator_any):
        with pytest.raises((ck.CheckpointError, ValueError)) as e:
            load(str(path))
        assert not marker.exists(), load.__name__
    assert "--trust-pickle" in str(e.value)  # the refusal says how to opt in and what it risks
    with pytest.raises(ck.CheckpointError, match="refusing"):
        ck.load_pickled_module(path)  # trusted defaults to False
    from ilsgan.segmentation.protocol import load_unet
    with pytest.raises(ValueError, match="--model"):
        load_unet(str(path))
    assert not marker.exists()


def test_run_directory_loaders_run_no_code(evil):
    """--resume latest / a run directory: the crafted file as checkpoint-latest.pt is skipped, not run."""
    path, marker = evil
    run = path.parent / "run"
    run.mkdir()
    os.replace(path, run / "checkpoint-latest.pt")
    with pytest.raises(ck.CheckpointError, match="none of the 1 checkpoint"):
        ck.load_latest(run, warn=lambda m: None)
    assert not marker.exists()


def test_cli_entry_points_run_no_code(evil, tmp_path, capsys):
    path, marker = evil
    with pytest.raises(SystemExit, match="--checkpoint.*--trust-pickle"):
        evaluate.main(["--checkpoint", str(path), "--protocol", "direct", "--device", "cpu"])
    assert not marker.exists()
    images = tmp_path / "imgs"
    images.mkdir()
    from PIL import Image
    Image.new("RGB", (8, 8)).save(images / "a.png")
    with pytest.raises(SystemExit, match="--model"):
        segment.main(["--model", str(path), "--images", str(images), "--out", str(tmp_path / "out")])
    assert not marker.exists()
    base = TINY_CFG_ARGS + ["--no-progress", "--no-tensorboard", "--outdir", str(tmp_path / "runs")]
    assert train.main(base + ["--resume", str(path)]) == 2
    assert "unreadable" in capsys.readouterr().err
    assert not marker.exists()
    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    (run / "checkpoint-latest.pt").write_bytes(path.read_bytes())
    assert train.main(base + ["--resume", "latest"]) == 2
    assert "none of the" in capsys.readouterr().err
    assert not marker.exists()


def test_trust_pickle_is_the_only_way_in(evil):
    """With the opt-in the file is unpickled (and its payload runs: what --trust-pickle's help warns of)."""
    path, marker = evil
    with pytest.raises(ValueError, match="not a generator"):
        evaluate.load_generator_any(str(path), trusted=True)
    assert marker.exists()
    help_text = " ".join(evaluate.build_parser().format_help().split())
    assert "--trust-pickle also accept a whole pickled generator module" in help_text
    assert "runs any code in the file" in help_text


def test_torchscript_inception_runs_no_code(tmp_path):
    from ilsgan.metrics.fid import InceptionError, load_inception
    marker = tmp_path / "PWNED"
    for make in (_torchscript_zip, _torch_zip, _raw_pickle):
        path = make(tmp_path / f"{make.__name__}.pt", marker)
        with pytest.raises(InceptionError, match="--inception"):
            load_inception(str(path))
        assert not marker.exists(), make.__name__


def test_no_unsafe_load_outside_the_opt_in():
    """Source check: ``weights_only=False`` appears only in checkpoints.load_pickled_module, and no module
    calls pickle.load / torch.load without weights_only=True."""
    root = Path(ck.__file__).parent
    for f in root.rglob("*.py"):
        text = f.read_text()
        assert not re.search(r"\bpickle\.loads?\(", text), f
        for m in re.finditer(r"torch\.load\(([^)]*)\)", text):
            args = m.group(1)
            if "weights_only=False" in args:
                enclosing = text[:m.start()].rsplit("\ndef ", 1)[-1].split("(", 1)[0]
                assert (f.name, enclosing) == ("checkpoints.py", "load_pickled_module"), f
            else:
                assert "weights_only=True" in args, (f, args)
