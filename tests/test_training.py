"""The shared resumable run (cddfm3d.training): exact resume over every random source, interruption, architecture
check, atomic files, rank handling (real two-process gloo run), CUDA random states, provenance and rebuild."""
from __future__ import annotations

import json
import os
import random
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from cddfm3d import training
from cddfm3d.serialization import atomic_write, read_safetensors, save_safetensors
from cddfm3d.training import (COMMANDS_FILE, ResumableRun, RunInterrupted, global_rng_state, read_commands,
                              rebuild_commands, record_command, set_global_rng_state, warmup_cosine)


@dataclass
class ToyConfig:
    width: int = 4
    steps: int = 8
    lr: float = 0.1
    checkpoint_every: int = 3
    seed: int = 0


class ToyRun(ResumableRun):
    """A linear model trained with SGD on data drawn from every random source a trainer may use: its own
    torch.Generator (batch indices), torch's global generator (dropout), Python's random and NumPy's global
    generator (noise). An unrestored source makes a resumed run differ from an uninterrupted one.

    ``interrupt=(step, kind)`` disturbs that step in its middle, after its random draws and before the update:
    ``"SIGINT"`` / ``"SIGTERM"`` send the signal to this process, ``"crash"`` raises RuntimeError."""

    name = "toy"
    arch_keys = ("width",)

    def __init__(self, config: ToyConfig, out_dir, device=None, interrupt: tuple[int, str] | None = None):
        super().__init__(config, out_dir, device)
        torch.manual_seed(config.seed)
        self.net = torch.nn.Sequential(torch.nn.Linear(config.width, config.width), torch.nn.Dropout(0.5),
                                       torch.nn.Linear(config.width, 1)).to(self.device)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=config.lr)
        self.rng = torch.Generator().manual_seed(config.seed + 1)
        self.track(net=self.net, opt=self.opt, rng=self.rng)
        self.data = torch.randn(32, config.width, generator=torch.Generator().manual_seed(99))
        self.interrupt = interrupt
        self.exports = 0
        self.counter = 0

    @property
    def total_steps(self) -> int:
        return self.cfg.steps

    def extra_state(self) -> dict:
        return {"counter": self.counter}

    def load_extra_state(self, state: dict) -> None:
        self.counter = int(state["counter"])

    def export(self) -> None:
        self.exports += 1
        torch.save(self.net.state_dict(), self.out / "toy.pt")

    def train_step(self) -> dict:
        idx = torch.randint(len(self.data), (4,), generator=self.rng)
        noise = random.gauss(0, 1) + float(np.random.standard_normal())
        torch.rand(1)
        if self.interrupt is not None and self.step == self.interrupt[0]:
            if self.interrupt[1] == "crash":
                raise RuntimeError("crash in the middle of a step")
            os.kill(os.getpid(), getattr(signal, self.interrupt[1]))
        x = self.data[idx].to(self.device)
        loss = (self.net(x).squeeze(1) - noise).square().mean()
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        self.counter += 1
        return {"loss": loss.item()}

    def train(self, progress=False, max_steps=None):
        return self.run_loop(snapshot_every=self.cfg.checkpoint_every, progress=progress, max_steps=max_steps)


def reseed_globals(seed=123):
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


def run(out, cfg=None, resume=True, **kw):
    interrupt = kw.pop("interrupt", None)
    return ToyRun(cfg or ToyConfig(), out, interrupt=interrupt).start(resume, **kw)


def assert_same_state(a: ToyRun, b: ToyRun):
    for k, v in a.net.state_dict().items():
        assert torch.equal(v, b.net.state_dict()[k]), k
    assert torch.equal(a.rng.get_state(), b.rng.get_state())
    assert a.step == b.step and a.counter == b.counter


def test_interrupted_and_resumed_run_is_bit_identical(tmp_path):
    reseed_globals()
    straight = run(tmp_path / "a")
    straight.train()
    after_straight = (torch.rand(3), random.random(), np.random.rand())
    # interrupted three times (Ctrl-C in the middle of a step, a crash in the middle of a step, then a step budget),
    # with the global generators disturbed between the processes, as a fresh interpreter would have them
    reseed_globals()
    first = run(tmp_path / "b", interrupt=(4, "SIGINT"))
    with pytest.raises(RunInterrupted) as stopped:
        first.train()
    # the signal ended the step it arrived in; the checkpoint is at that step boundary
    assert stopped.value.step == 5 and stopped.value.exit_code == 128 + signal.SIGINT
    assert first.step == 5 and torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["step"] == 5
    reseed_globals(7)
    crashing = run(tmp_path / "b", interrupt=(7, "crash"))
    with pytest.raises(RuntimeError, match="crash"):
        crashing.train()
    # a half-done step is not saved: the checkpoint stays at the last snapshot (step 6)
    assert torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["step"] == 6
    reseed_globals(9)
    second = run(tmp_path / "b")
    assert second.step == 6 and second.counter == 6
    second.train(max_steps=1)
    reseed_globals(8)
    resumed = run(tmp_path / "b")
    resumed.train()
    assert resumed.step == 8
    assert_same_state(straight, resumed)
    # the global generators continue exactly as after the uninterrupted run
    after_resumed = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(after_straight[0], after_resumed[0]) and after_straight[1:] == after_resumed[1:]
    log = json.loads((tmp_path / "b" / "log.json").read_text())
    assert log == json.loads((tmp_path / "a" / "log.json").read_text())


@pytest.mark.parametrize("source", ["torch", "python", "numpy", "generator"])
def test_each_random_source_matters(tmp_path, source):
    """Losing any one source from the saved state breaks exact resume, so the test above can fail."""
    reseed_globals()
    straight = run(tmp_path / "a")
    straight.train()
    reseed_globals()
    run(tmp_path / "b").train(max_steps=4)
    path = tmp_path / "b" / "checkpoint.pt"
    ck = torch.load(path, weights_only=True)
    other = torch.Generator().manual_seed(5).get_state()
    if source == "generator":
        ck["rng"] = ck["rank_rng"][0]["generators"]["rng"] = other
    elif source == "torch":
        ck["rank_rng"][0]["global"]["torch"] = other
    else:
        del ck["rank_rng"][0]["global"][source]
    torch.save(ck, path)
    reseed_globals(7)
    resumed = run(tmp_path / "b")
    resumed.train()
    assert any(not torch.equal(v, resumed.net.state_dict()[k]) for k, v in straight.net.state_dict().items())


def test_checkpoint_files_and_snapshots(tmp_path):
    r = run(tmp_path)
    r.train()
    # snapshots at steps 3 and 6, and the final save
    assert r.exports == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "log.json", "toy.pt"]
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert {"net", "opt", "rng", "step", "config", "log", "rank_rng", "counter", "format"} <= set(state)
    assert json.loads(state["config"]) == {"width": 4, "steps": 8, "lr": 0.1, "checkpoint_every": 3, "seed": 0}
    log = json.loads((tmp_path / "log.json").read_text())
    assert [e["step"] for e in log] == []   # log_every = 10 > 8 steps
    r2 = run(tmp_path / "c", ToyConfig(steps=25))
    r2.train()
    log = json.loads((tmp_path / "c" / "log.json").read_text())
    assert [e["step"] for e in log] == [10, 20] and all(np.isfinite(e["loss"]) for e in log)


def test_resume_refuses_other_architecture_but_not_other_schedule(tmp_path):
    run(tmp_path).train(max_steps=2)
    with pytest.raises(ValueError) as err:
        run(tmp_path, ToyConfig(width=5))
    msg = str(err.value)
    assert str(tmp_path / "checkpoint.pt") in msg and "architecture" in msg and "width=4" in msg and "width=5" in msg
    longer = run(tmp_path, ToyConfig(steps=12))
    assert longer.step == 2
    longer.train()
    assert longer.step == 12
    fresh = run(tmp_path, ToyConfig(width=5), resume=False)
    assert fresh.step == 0


def test_resume_reads_an_architecture_field_missing_from_an_older_checkpoint_as_its_default(tmp_path):
    """A checkpoint written before an architecture field existed resumes when the field is at its default (what that
    run did), and is refused with the field named when another value is asked for."""

    @dataclass
    class Newer(ToyConfig):
        gate: bool = False

    class NewerRun(ToyRun):
        arch_keys = ("width", "gate")

    run(tmp_path).train(max_steps=2)       # its saved config has no "gate"
    resumed = NewerRun(Newer(), tmp_path).start()
    assert resumed.step == 2
    with pytest.raises(ValueError, match=r"gate=None in the checkpoint, gate=True requested"):
        NewerRun(Newer(gate=True), tmp_path).start()


def test_stop_at_step_keeps_the_schedule(tmp_path):
    reseed_globals()
    r = run(tmp_path / "a", stop_at_step=5)
    r.train()
    assert r.step == 5
    rest = run(tmp_path / "a")
    rest.train()
    reseed_globals()
    straight = run(tmp_path / "b")
    straight.train()
    assert_same_state(straight, rest)
    with pytest.raises(ValueError, match="stop_at_step"):
        run(tmp_path / "c", stop_at_step=0)


@pytest.mark.parametrize("lr, warmup, steps", [(2e-3, 10, 50), (1.0, 1, 7), (0.5, 0, 20), (1e-3, 30, 30)])
def test_warmup_cosine_schedule(lr, warmup, steps):
    """The one learning-rate schedule of the package (train-t, train-recon) against the formula in float64 NumPy:
    a wrong warm-up slope, an off-by-one step or a decay that does not end at 0 on ``steps`` fails."""
    def expected(step):
        if step < warmup:
            return lr * (step + 1) / warmup
        frac = min((step - warmup) / max(steps - warmup, 1), 1.0)
        return lr / 2 * (1 + np.cos(np.pi * frac))

    got = [warmup_cosine(s, lr, warmup, steps) for s in range(steps + 5)]
    assert got == pytest.approx([expected(s) for s in range(steps + 5)], rel=1e-12, abs=1e-15)
    if warmup:
        assert got[0] == pytest.approx(lr / warmup) and got[warmup - 1] == pytest.approx(lr)
    else:
        assert got[0] == lr
    if warmup < steps:
        assert got[steps] == pytest.approx(0.0, abs=1e-15) and got[-1] == pytest.approx(0.0, abs=1e-15)
    decay = got[warmup:steps + 1]
    assert all(a >= b for a, b in zip(decay, decay[1:], strict=False))


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_writes_are_ordinary_files(tmp_path, umask):
    """Every atomic write gets 0o666 less the umask, as ``open()`` gives: safetensors' writer creates 0600 files, so
    gen-pairs shards were 0600 next to a 0644 pairs.json; a writer's own mode must not leak through either."""
    old = os.umask(umask)
    try:
        save_safetensors({"a": torch.zeros(2)}, tmp_path / "x.safetensors", {})
        atomic_write(tmp_path / "y.json", lambda p: p.write_text("{}"))
        atomic_write(tmp_path / "z.bin", lambda p: os.close(os.open(p, os.O_CREAT | os.O_WRONLY, 0o600)))
        (tmp_path / "plain.txt").write_text("")                  # the reference: an ordinary new file
    finally:
        os.umask(old)
    want = 0o666 & ~umask
    assert (tmp_path / "plain.txt").stat().st_mode & 0o777 == want
    for name in ("x.safetensors", "y.json", "z.bin"):
        assert (tmp_path / name).stat().st_mode & 0o777 == want, name
    assert not list(tmp_path.glob("*.tmp"))


def test_only_rank_zero_writes(tmp_path, monkeypatch):
    monkeypatch.setattr(training, "dist_info", lambda: (1, 1))
    r = run(tmp_path / "run")
    r.train()
    assert not (tmp_path / "run").exists() and r.exports == 0
    monkeypatch.setenv("RANK", "1")
    record_command(tmp_path / "cmd", ["train-toy"])
    assert not (tmp_path / "cmd").exists()


def test_cuda_random_states_are_saved_and_restored(monkeypatch):
    """The CUDA path of the random state without a GPU: the per-device states go into the saved state and come
    back device by device (on as many devices as both sides have), and only when the run is on CUDA."""
    saved = [torch.tensor([1, 2], dtype=torch.uint8), torch.tensor([3, 4], dtype=torch.uint8)]
    restored = {}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: list(saved))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, i: restored.__setitem__(i, s.clone()))
    state = global_rng_state()
    assert [t.tolist() for t in state["cuda"]] == [[1, 2], [3, 4]]
    set_global_rng_state(state, cuda=False)
    assert restored == {}
    set_global_rng_state(state, cuda=True)
    assert list(restored) == [0] and restored[0].tolist() == [1, 2]


def _ddp_worker(rank: int, world: int, init_file: str, out: str, steps: int, results: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.manual_seed(1000 + rank)   # ranks start with different global streams
        r = ToyRun(ToyConfig(steps=steps), out)
        r.rng.manual_seed(50 + rank)
        r.start(True)
        r.train(max_steps=3)
        torch.save({"rng": r.rng.get_state(), "torch": torch.get_rng_state(), "step": r.step},
                   f"{results}.{rank}")
        # both ranks done with every collective before either tears its group down: without it, one rank's
        # teardown could race the other's last gloo traffic (CI once saw a rank abort here: "terminate called
        # without an active exception", not reproduced in 20 runs here)
        torch.distributed.barrier()
    finally:
        torch.distributed.destroy_process_group()


def _ddp(tmp_path, tag: str, out, steps: int) -> list[dict]:
    import torch.multiprocessing as mp

    results = str(tmp_path / f"res-{tag}")
    mp.start_processes(_ddp_worker, args=(2, str(tmp_path / f"init-{tag}"), str(out), steps, results), nprocs=2,
                       join=True, start_method="spawn")
    return [torch.load(f"{results}.{k}", weights_only=True) for k in range(2)]


@pytest.mark.slow
def test_two_process_gloo_run_saves_and_restores_every_rank(tmp_path):
    """A real torch.distributed run (2 CPU processes): only rank 0 writes; the checkpoint holds both ranks' random
    states, and on resume each rank gets its own back."""
    out = tmp_path / "ddp"
    first = _ddp(tmp_path, "1", out, steps=6)
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["step"] == 3 and len(state["rank_rng"]) == 2
    for k in range(2):
        assert torch.equal(state["rank_rng"][k]["generators"]["rng"], first[k]["rng"])
        assert torch.equal(state["rank_rng"][k]["global"]["torch"], first[k]["torch"])
    assert not torch.equal(first[0]["rng"], first[1]["rng"])
    second = _ddp(tmp_path, "2", out, steps=6)
    assert [s["step"] for s in second] == [6, 6]
    # each rank continued its own streams: the same as three more steps of a generator started from its state
    for k in range(2):
        g = torch.Generator()
        g.set_state(first[k]["rng"])
        for _ in range(3):
            torch.randint(32, (4,), generator=g)
        assert torch.equal(g.get_state(), second[k]["rng"])


# ------------------------------------------------------------------------------------------------ provenance
def line(argv):
    return "python -m cddfm3d " + shlex.join(argv)


def test_record_stop_and_rebuild(tmp_path):
    argv = ["train-toy", "--out", str(tmp_path / "r"), "--note", "a b"]
    # interrupted (Ctrl-C during step index 2: saved at step 3), resumed and stopped again by the same command,
    # then finished
    r = ToyRun(ToyConfig(), tmp_path / "r", interrupt=(2, "SIGINT")).start(command=argv)
    with pytest.raises(RunInterrupted):
        r.train()
    ToyRun(ToyConfig(), tmp_path / "r").start(command=argv).train(max_steps=2)
    lines = (tmp_path / "r" / COMMANDS_FILE).read_text().splitlines()
    assert lines[0] == line(argv) and lines[1].startswith("# stopped at step 3 of 8")
    assert lines[3].startswith("# stopped at step 5 of 8")
    assert read_commands(tmp_path / "r") == [line(argv)] * 2
    assert rebuild_commands(tmp_path / "r") == [line(argv + ["--stop-at-step", "5"])]
    ToyRun(ToyConfig(), tmp_path / "r").start(command=argv).train()
    assert rebuild_commands(tmp_path / "r") == [line(argv)]
    # a longer schedule after a finished run is a second command; the first keeps no stop (it finished)
    longer = argv + ["--steps", "12"]
    ToyRun(ToyConfig(steps=12), tmp_path / "r").start(command=longer).train(max_steps=1)
    assert rebuild_commands(tmp_path / "r") == [line(argv), line(longer + ["--stop-at-step", "9"])]
    # a deliberate stop that was reached is not repeated; an interrupted one is replaced
    stop = argv + ["--stop-at-step", "4"]
    ToyRun(ToyConfig(), tmp_path / "s").start(stop_at_step=4, command=stop).train()
    assert rebuild_commands(tmp_path / "s") == [line(stop)]
    with pytest.raises(RunInterrupted):
        ToyRun(ToyConfig(), tmp_path / "t", interrupt=(1, "SIGTERM")).start(stop_at_step=4, command=stop).train()
    assert rebuild_commands(tmp_path / "t") == [line(argv + ["--stop-at-step", "2"])]
    # a run that crashed before its first checkpoint produced nothing: no command
    with pytest.raises(RuntimeError):
        ToyRun(ToyConfig(), tmp_path / "u", interrupt=(1, "crash")).start(command=argv).train()
    assert (tmp_path / "u" / COMMANDS_FILE).read_text().splitlines()[1].startswith("# stopped at step 0 of 8")
    assert not (tmp_path / "u" / "checkpoint.pt").exists() and rebuild_commands(tmp_path / "u") == []
    # datasets: no stop lines, repeats merged
    record_command(tmp_path / "d", ["make-world", "--n", "5"])
    record_command(tmp_path / "d", ["make-world", "--n", "5"])
    assert rebuild_commands(tmp_path / "d") == [line(["make-world", "--n", "5"])]
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "none" / COMMANDS_FILE)):
        rebuild_commands(tmp_path / "none")


def test_rebuilt_gan_command_reproduces_an_interrupted_run(tmp_path, monkeypatch):
    """End to end through the CLI: a train-gan run hit by Ctrl-C between its discriminator and generator updates,
    then by a crash in the middle of a step, then stopped early; the single command that rebuild_commands states,
    run in a fresh folder, writes the identical generator."""
    from PIL import Image

    from cddfm3d import cli
    from cddfm3d.stylegan2.training import GANTrainer

    data = tmp_path / "imgs"
    data.mkdir()
    g = torch.Generator().manual_seed(0)
    for i in range(6):
        img = (torch.rand(16, 16, 3, generator=g) * 255).byte().numpy()
        Image.fromarray(img).save(data / f"{i}.png")
    args = ["train-gan", "--data", str(data), "--resolution", "16", "--batch", "2", "--kimg", "0.02",
            "--snapshot-kimg", "0.004", "--device", "cpu"]
    small = dict(z_dim=8, w_dim=8, mapping_layers=1, channel_max=8)
    original_init = GANTrainer.__init__

    def small_init(self, config, out_dir, device=None):
        config.generator, config.discriminator = dict(small), dict(channel_max=8)
        original_init(self, config, out_dir, device)

    monkeypatch.setattr(GANTrainer, "__init__", small_init)
    run_dir = tmp_path / "run"
    original_d_step = GANTrainer.d_step

    def d_step_then_ctrl_c(self, real):
        stats = original_d_step(self, real)
        if self.step == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return stats

    monkeypatch.setattr(GANTrainer, "d_step", d_step_then_ctrl_c)
    assert cli.main(args + ["--out", str(run_dir)]) == 128 + signal.SIGINT
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["step"] == 3

    def d_step_then_crash(self, real):
        stats = original_d_step(self, real)
        if self.step == 5:
            raise RuntimeError("crash between the D and G updates")
        return stats

    monkeypatch.setattr(GANTrainer, "d_step", d_step_then_crash)
    with pytest.raises(RuntimeError, match="crash"):
        cli.main(args + ["--out", str(run_dir)])
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["step"] == 4   # the last snapshot
    monkeypatch.setattr(GANTrainer, "d_step", original_d_step)
    assert cli.main(args + ["--out", str(run_dir), "--stop-at-step", "7"]) == 0
    rebuilt = rebuild_commands(run_dir)
    assert rebuilt == [line(args + ["--out", str(run_dir), "--stop-at-step", "7"])]
    fresh = tmp_path / "fresh"
    words = shlex.split(rebuilt[0].replace(str(run_dir), str(fresh)))[3:]
    assert cli.main(words) == 0
    # (the files' bytes may differ: safetensors writes the metadata keys in hash-map order)
    (a, meta_a), (b, meta_b) = (read_safetensors(d / "generator.safetensors") for d in (fresh, run_dir))
    assert meta_a == meta_b and a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_signal_stops_at_the_step_boundary_and_restores_handlers(tmp_path, sig):
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    r = run(tmp_path, interrupt=(1, sig))
    with pytest.raises(RunInterrupted) as stopped:
        r.train()
    assert stopped.value.signum == getattr(signal, sig) and stopped.value.step == 2 and r.step == 2
    assert f"interrupted by {sig} at step 2" in str(stopped.value)
    assert {s: signal.getsignal(s) for s in before} == before
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["step"] == 2


SUBPROCESS_RUN = """
import sys, time
sys.path.insert(0, {root!r})
from cddfm3d.training import RunInterrupted
from tests.test_training import ToyConfig, ToyRun, reseed_globals

class Slow(ToyRun):
    def train_step(self):
        stats = super().train_step()
        time.sleep(0.05)   # long enough steps for the signal to land inside one
        return stats

reseed_globals(0)
try:
    Slow(ToyConfig(steps=60, checkpoint_every=1000), {out!r}).start(command=["train-toy"]).train()
except RunInterrupted as e:
    print(e, file=sys.stderr)
    sys.exit(e.exit_code)
"""


@pytest.mark.slow
def test_sigterm_from_outside_keeps_an_exact_checkpoint(tmp_path):
    """As `timeout` or a batch scheduler does it: SIGTERM to a running process, at whatever point of a step. The
    process saves the step boundary and exits with 128 + 15; resuming reproduces an uninterrupted run."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", SUBPROCESS_RUN.format(root=root, out=str(out))],
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not (out / COMMANDS_FILE).exists() and time.time() < deadline:   # the loop has started
        time.sleep(0.05)
    time.sleep(0.4)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    saved = torch.load(out / "checkpoint.pt", weights_only=True)["step"]
    assert 0 < saved < 60 and f"interrupted by SIGTERM at step {saved}" in err
    assert (out / COMMANDS_FILE).read_text().splitlines()[-1].startswith(f"# stopped at step {saved} of 60")
    reseed_globals(5)
    resumed = ToyRun(ToyConfig(steps=60, checkpoint_every=1000), out).start()
    resumed.train()
    reseed_globals(0)
    straight = ToyRun(ToyConfig(steps=60, checkpoint_every=1000), tmp_path / "straight").start()
    straight.train()
    assert_same_state(straight, resumed)


def test_run_in_train_mode_trains_in_train_mode_and_leaves_eval_mode(tmp_path):
    """Every step sees the network in training mode; afterwards it is in eval mode, also after a crash."""
    modes = []

    class ModeRun(ToyRun):
        def train_step(self):
            modes.append(self.net.training)
            return super().train_step()

    r = ModeRun(ToyConfig(steps=5), tmp_path / "ok").start(resume=False)
    r.net.eval()
    out = r.run_in_train_mode(r.net, snapshot_every=2, progress=False)
    assert modes == [True] * 5 and not r.net.training
    assert out["step"] == 5 == r.step and out["seconds"] >= 0 and set(out) == {"step", "seconds"}
    crash = ModeRun(ToyConfig(steps=5), tmp_path / "crash", interrupt=(2, "crash")).start(resume=False)
    with pytest.raises(RuntimeError, match="crash in the middle"):
        crash.run_in_train_mode(crash.net, snapshot_every=2, progress=False)
    assert not crash.net.training and crash.step == 2
