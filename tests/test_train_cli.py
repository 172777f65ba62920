"""The CLI `python -m ilsgan.train`: a tiny end-to-end run, resume, SIGINT save, errors."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ilsgan import train

from _train_tiny import TINY_CFG_ARGS, cli_config

FAST = ["--no-progress", "--no-tensorboard", "--data", "synthetic:easy", "--aug", "noaug", "--final-eval", "off"]


def run_cli(args, capsys):
    rc = train.main(args)
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_help_documents_options(capsys):
    with pytest.raises(SystemExit) as e:
        train.main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for opt in ("--data", "--outdir", "--preset", "--resolution", "--batch", "--kimg", "--seed", "--resume", "--snap",
                "--ils", "--device", "--impl", "--r1-gamma", "--w-ils", "--w-bin", "--w-area", "--workers", "--cfg"):
        assert opt in text, opt


def test_demo_is_the_default_unless_data_or_preset_is_chosen():
    parse = train.build_parser().parse_args
    assert train.choose_preset(parse([])) == "demo"
    assert train.choose_preset(parse(["--outdir", "x", "--seed", "3", "--kimg", "1"])) == "demo"
    assert train.choose_preset(parse(["--data", "synthetic:hard"])) == "quick"
    assert train.choose_preset(parse(["--preset", "paper64"])) == "paper64"
    assert train.choose_preset(parse(["--resume", "latest"])) is None  # the checkpoint's settings
    cfg = cli_config(["--kimg", "1"])
    assert (cfg.network.resolution, cfg.run.kimg, cfg.preset, cfg.session.minutes) == (32, 1.0, "demo", 14.0)


def test_every_option_sets_the_setting_of_its_name():
    # (that each option's flag is its setting's name is asserted where the options are built)
    p = train.build_parser()
    given = ["--w-bin", "1.5", "--ils", "off", "--area-mirror", "auto", "--keep", "all", "--aug", "noaug",
             "--crop", "box", "--glr", "0.01", "--no-progress", "--cfg", "w_area=3", "--cfg", "ils_sigma=0.1,0.5"]
    assert train.flag_settings(p.parse_args(given)) == {
        "w_bin": 1.5, "ils": False, "area_mirror": None, "keep": None, "aug": "noaug", "crop": "box", "glr": 0.01,
        "no_progress": True, "w_area": 3.0, "ils_sigma": (0.1, 0.5)}
    assert train.flag_settings(p.parse_args([])) == {}  # nothing chosen: the preset decides


def test_area_mirror_option_reaches_the_loss():
    # quick (and the demo): two-sided area prior; paper presets: the release's automatic rule (only with --shift 0)
    from ilsgan.losses.gan import ILSGANLoss

    def mirror(argv):
        return ILSGANLoss(None, None, cfg=cli_config(argv).loss, r1_gamma=0.0)._mask_mirror()
    assert mirror([]) is True
    assert mirror(["--preset", "paper64"]) is False  # auto, with the paper's shift 0.125
    assert mirror(["--preset", "paper64", "--shift", "0"]) is True  # auto, no perturbation
    for opt, want in (("on", True), ("off", False)):
        assert mirror(["--preset", "paper64", "--area-mirror", opt]) is want
    assert mirror(["--preset", "paper64", "--area-mirror", "auto", "--shift", "0"]) is True


def test_end_to_end_tiny_run_and_resume(tmp_path, capsys):
    args = TINY_CFG_ARGS + FAST + ["--outdir", str(tmp_path), "--name", "r", "--kimg", "0.012", "--snap", "0.008"]
    rc, out, _ = run_cli(args, capsys)
    assert rc == 0, out
    run = tmp_path / "r"
    for f in ("config.json", "log.jsonl", "reals.png", "grid-000000.008.png", "plot.png", "checkpoint-latest.pt",
              "checkpoint-000000.008.pt", "checkpoint-000000.012.pt"):  # snapshots at 8 and 12 images
        assert (run / f).exists(), f
    assert str(run) in out and "image grid" in out and "checkpoint" in out
    assert "modulated_conv2d" in out  # backend summary, one line per op
    saved = json.load(open(run / "config.json"))
    from ilsgan.ops import backend_info
    assert saved["config"]["network"]["resolution"] == 16 and saved["config"]["loss"]["w_bin"] == 2.0
    dev = saved["config"]["session"]["device"].split(":")[0]
    assert saved["op_backends"] == {op: d[dev]["auto"] for op, d in backend_info().items()}
    assert saved["op_backends"]["modulated_conv2d"] != "ref"  # the compiled kernels are built for the tests
    recs = [json.loads(l) for l in open(run / "log.jsonl")]
    assert recs[-1]["Progress/kimg"] == pytest.approx(0.012)
    for k in ("Loss/G/adv", "Loss/D/real", "Mask/area", "Mask/binarized", "Progress/augment_p", "Timing/sec_per_kimg"):
        assert k in recs[-1]
    # --resume latest continues in the same run directory with a longer schedule
    rc, out, _ = run_cli(FAST + ["--outdir", str(tmp_path), "--resume", "latest", "--kimg", "0.016"], capsys)
    assert rc == 0, out
    assert "changed from the checkpoint: kimg 0.012 -> 0.016" in out
    recs = [json.loads(l) for l in open(run / "log.jsonl")]
    assert recs[-1]["Progress/kimg"] == pytest.approx(0.016) and recs[-1]["Progress/iteration"] == 4
    # a checkpoint from another config is refused with a clear message
    rc, _, err = run_cli(FAST + ["--resolution", "32", "--batch", "4", "--outdir", str(tmp_path), "--resume",
                                 str(run / "checkpoint-latest.pt")], capsys)
    assert rc == 2 and "another network config" in err and "resolution" in err


def test_errors(tmp_path, capsys):
    base = TINY_CFG_ARGS + ["--no-progress", "--no-tensorboard", "--outdir", str(tmp_path)]
    rc, _, err = run_cli(base + ["--data", str(tmp_path / "missing")], capsys)
    assert rc == 2 and "--data" in err and "missing" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    rc, _, err = run_cli(base + ["--data", str(empty)], capsys)
    assert rc == 2 and "--data" in err
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.png").write_bytes(b"not a png")
    rc, _, err = run_cli(base + ["--data", str(bad)], capsys)
    assert rc == 2 and "--data" in err
    afile = tmp_path / "afile"
    afile.write_text("x")
    rc, _, err = run_cli(TINY_CFG_ARGS + ["--data", "synthetic:easy", "--outdir", str(afile / "sub")], capsys)
    assert rc == 2 and "output directory" in err
    rc, _, err = run_cli(base + ["--resume", "latest", "--outdir", str(tmp_path / "nothing")], capsys)
    assert rc == 2 and "no checkpoint" in err
    notckpt = tmp_path / "x.pt"
    notckpt.write_bytes(b"junk")
    rc, _, err = run_cli(base + ["--resume", str(notckpt)], capsys)
    assert rc == 2 and "unreadable" in err
    rc, _, err = run_cli(base + ["--cfg", "nonsense=3"], capsys)
    assert rc == 2 and "unknown key 'nonsense'" in err
    rc, _, err = run_cli(base + ["--cfg", "wbin=3"], capsys)
    assert rc == 2 and "did you mean 'w_bin'" in err
    rc, _, err = run_cli(base + ["--cfg", "z_dim=1.5"], capsys)
    assert rc == 2 and "z_dim" in err and "expected int" in err
    rc, _, err = run_cli(base + ["--cfg", "ils_dist=cauchy"], capsys)
    assert rc == 2 and "ils_dist must be one of" in err
    rc, _, err = run_cli(base + ["--cfg", "channel_max"], capsys)
    assert rc == 2 and "KEY=VALUE" in err
    if not __import__("torch").cuda.is_available():
        rc, _, err = run_cli(base + ["--data", "synthetic:easy", "--device", "cuda"], capsys)
        assert rc == 2 and "CUDA is not available" in err
    rc, _, err = run_cli(base + ["--data", "synthetic:easy", "--device", "tpu"], capsys)
    assert rc == 2 and "--device" in err
    for bad_args, name in ((["--batch", "0"], "--batch"), (["--resolution", "48"], "--resolution"),
                           (["--kimg", "-1"], "--kimg"), (["--ils", "maybe"], "--ils"), (["--w-bin", "x"], "--w-bin"),
                           (["--impl", "fast"], "--impl")):
        with pytest.raises(SystemExit) as e:
            train.main(bad_args)
        assert e.value.code == 2
        assert name in capsys.readouterr().err


def test_sigint_saves_checkpoint(tmp_path):
    args = TINY_CFG_ARGS + FAST + ["--outdir", str(tmp_path), "--name", "s", "--kimg", "100", "--snap", "50",
                                   "--tick", "0.004"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "ilsgan.train", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, cwd=str(tmp_path))
    log = tmp_path / "s" / "log.jsonl"
    t0 = time.time()
    while time.time() - t0 < 120 and proc.poll() is None:
        if log.exists() and log.stat().st_size > 0:
            break
        time.sleep(0.5)
    assert proc.poll() is None, proc.stdout.read()
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGINT, out
    assert "checkpoint saved" in out and "Traceback" not in out
    from ilsgan.checkpoints import load_checkpoint
    ck = load_checkpoint(tmp_path / "s" / "checkpoint-latest.pt")
    assert ck["counters"]["iteration"] >= 1


def test_cpu_malloc_tuning_keeps_large_tensors_off_mmap():
    """After tuning, a 64 MiB tensor comes from the heap (glibc would mmap it fresh otherwise), so
    freeing and allocating it again touches no new pages."""
    import ctypes
    import ctypes.util

    import torch

    from ilsgan.training.cpu_malloc import tune_malloc_for_training

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallinfo2 = libc.mallinfo2
    except (OSError, AttributeError):
        pytest.skip("needs glibc >= 2.33 (mallinfo2)")

    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in
                    ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
                     "fordblks", "keepcost")]

    mallinfo2.restype = MallInfo2
    # the same allocation in a fresh process with glibc's defaults is mmapped (what the check detects)
    probe = ("import ctypes, torch\n"
             "class M(ctypes.Structure): _fields_ = [(f'f{i}', ctypes.c_size_t) for i in range(10)]\n"
             "libc = ctypes.CDLL('libc.so.6'); libc.mallinfo2.restype = M\n"
             "b = libc.mallinfo2().f4; x = torch.empty(16 << 20); x.fill_(1.0); print(libc.mallinfo2().f4 - b)")
    untuned = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert int(untuned.stdout.split()[-1]) >= 64 << 20, untuned.stdout
    note = tune_malloc_for_training()
    assert note.startswith("malloc: glibc tuned") and tune_malloc_for_training() == note
    before = mallinfo2().hblkhd  # bytes in mmapped blocks
    x = torch.empty(16 << 20, dtype=torch.float32)  # 64 MiB: above glibc's largest mmap threshold
    x.fill_(1.0)
    assert mallinfo2().hblkhd == before
    assert mallinfo2().uordblks >= x.numel() * 4  # it is in the heap instead


def test_minutes_budget_then_masks_scored_against_the_baselines(tmp_path, capsys, monkeypatch):
    from ilsgan import evaluate
    from ilsgan.checkpoints import load_checkpoint
    monkeypatch.setattr(evaluate, "QUICK_ARGS", ("--pairs", "16", "--unet-iters", "2", "--unet-base", "4",
                                                 "--unet-batch", "8", "--self-train", "1",
                                                 "--self-train-images", "8"))
    args = TINY_CFG_ARGS + ["--no-progress", "--no-tensorboard", "--data", "synthetic:easy", "--aug", "noaug",
                            "--outdir", str(tmp_path), "--name", "m", "--kimg", "100", "--snap", "50",
                            "--tick", "0.004", "--minutes", "0.0001"]
    rc, out, _ = run_cli(args, capsys)
    assert rc == 0, out
    assert out.splitlines()[0].endswith("stops after 0.0001 minutes of training")
    assert "(the 0.0001-minute budget)" in out
    run = tmp_path / "m"
    assert load_checkpoint(run / "checkpoint-latest.pt")["counters"]["cur_nimg"] == 4  # the first tick
    rep = json.loads((run / "eval.json").read_text())
    assert rep["n_test"] == 200 and set(rep["baselines"]) == {"allfg", "otsu", "kmeans", "border"}
    assert "self_trained" in rep and evaluate.PAPER_ROW in out and "IoU vs" in out
    assert len(os.listdir(run / "test-images" / "images")) == 200


def test_checkpoint_loaded_and_dataset_opened_once_per_run(tmp_path, capsys, monkeypatch):
    """A new run opens its data once and reads no checkpoint; a resumed run (from a run directory and
    from 'latest') reads its checkpoint once and opens its data once."""
    import torch

    import ilsgan.data as data
    calls = {"torch.load": 0, "open_dataset": 0}  # file reads of checkpoints, and dataset opens

    def counting(name, fn):
        def wrapper(*a, **k):
            calls[name] += 1
            return fn(*a, **k)
        return wrapper
    monkeypatch.setattr(torch, "load", counting("torch.load", torch.load))
    monkeypatch.setattr(data, "open_dataset", counting("open_dataset", data.open_dataset))
    base = TINY_CFG_ARGS + FAST + ["--outdir", str(tmp_path), "--snap", "0.004"]
    rc, out, _ = run_cli(base + ["--name", "r", "--kimg", "0.004"], capsys)
    assert rc == 0, out
    assert calls == {"torch.load": 0, "open_dataset": 1}
    for resume, kimg in (("latest", "0.008"), (str(tmp_path / "r"), "0.012")):
        calls.update({k: 0 for k in calls})
        rc, out, _ = run_cli(FAST + ["--outdir", str(tmp_path), "--resume", resume, "--kimg", kimg], capsys)
        assert rc == 0, out
        assert calls == {"torch.load": 1, "open_dataset": 1}, resume
