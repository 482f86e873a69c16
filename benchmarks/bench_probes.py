"""Cost of the probes: a training step bare vs with every instrument on, and memory over a long run.

Run: ``.venv/bin/python benchmarks/bench_probes.py`` (one CPU thread, as on Binder); add
``--quick`` for fewer repeats, ``--startup`` for import time, the first probed step and ResNet-18's
memory, or ``--breakdown`` for where a recorded step's time goes (CPU time
inside each part of the probe, per step), or ``--against REV`` for this tree's probe against the
probe of git revision REV (e.g. ``main``), side by side in one process. Prints Markdown tables;
``run_all.py`` copies them into RESULTS.md.

The overhead is measured as ratios to a bare step *in the same process, interleaved step by
step*: each repeat trains fresh copies of one model side by side (bare, probed every step,
probed every 10th), one step of each in a shuffled order per round for ``STEPS`` rounds, and
the ratio of their summed step times is taken within the repeat; the table gives the median
ratio over the repeats (and the median step times). A drift of the machine (another job, the
clock) then lands on every variant alike, where timing the variants one after another let it
fall on one of them: single ratios moved by ±0.03 that way. Each table is
measured twice, in fresh processes: with glibc's default heap trimming, which returns freed
memory to the system and page-faults it back in (it swings the bare step by up to 25 %), and
with ``MALLOC_MMAP_THRESHOLD_``/``MALLOC_TRIM_THRESHOLD_`` set so that the heap stays put.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from gradcourse import data, models
from gradcourse import probes as probes_module
from gradcourse.losses import loss_function
from gradcourse.models import resnet18
from gradcourse.probes import Probe

STEPS = 50
#: Rounds per repeat for ResNet-18 and nanoGPT (a step takes 0.1–0.3 s): ten, so that every=10 records one in ten.
LARGE_STEPS = 10
REPEATS = 15
STEADY_HEAP = {"MALLOC_MMAP_THRESHOLD_": "16777216", "MALLOC_TRIM_THRESHOLD_": "268435456"}


def small_cnn() -> nn.Module:
    """Three 3×3 convolutions (16, 32, 32 channels) and a linear head, for 1×8×8 images."""
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(32 * 4 * 4, 10))


class HandWrittenHooks:
    """The peer: the hooks a practitioner writes by hand to watch the same things (what
    ``wandb.watch``-style loggers do): per Linear/Conv layer, a forward hook reading its output's
    mean and std and hooking its gradient's norm, and a hook per weight reading its gradient's
    norm and a log2 histogram, each read with ``.item()``/``.tolist()`` as it comes."""

    def __init__(self, model: nn.Module, every: int = 1):
        self.model, self.every, self.step, self.records = model, every, 0, []
        self.layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))]
        self.handles: list = []

    def __enter__(self):
        self.handles = [m.register_forward_hook(self._forward) for m in self.layers]
        self.handles += [m.weight.register_post_accumulate_grad_hook(self._weight) for m in self.layers]
        self.handles.append(self.model.register_forward_pre_hook(self._count))
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()

    def _count(self, module, args):
        if torch.is_grad_enabled():
            self.step += 1
            self.records.append({})

    def _recorded(self) -> bool:
        return (self.step - 1) % self.every == 0

    def _forward(self, module, args, out):
        if torch.is_grad_enabled() and self._recorded():
            a = out.detach().double()
            self.records[-1][module] = [a.mean().item(), a.std().item()]
            out.register_hook(lambda g: self.records[-1][module].append(g.double().norm().item()))

    def _weight(self, p):
        if self._recorded():
            g = p.grad.detach()
            exponents = torch.frexp(g)[1].clamp(-40, 7) + 40
            self.records[-1][p] = [g.double().norm().item(), torch.bincount(exponents.flatten(), minlength=48).tolist()]


@dataclass
class Case:
    """One model of the side-by-side table: a batch, a learning rate, how its loss is computed
    (``loss(net, batch)``) and how many interleaved rounds of steps a repeat takes."""

    model: nn.Module
    batch: tuple
    lr: float
    loss: Callable[[nn.Module, tuple], torch.Tensor]
    steps: int = STEPS


def _labelled_loss(net: nn.Module, batch: tuple) -> torch.Tensor:
    x, y = batch
    return loss_function(y)(net(x), y)


def _gpt_loss(net: nn.Module, batch: tuple) -> torch.Tensor:
    idx, targets = batch
    return net(idx, targets)[1]  # nanoGPT's forward returns (logits, loss)


def cases(large: bool = True) -> dict[str, Case]:
    """The models timed: the lessons' MLPs, a CNN and an LSTM, and (``large``) the two that
    practitioners bring: ResNet-18 as torchvision defines it and a 6-layer nanoGPT."""
    torch.manual_seed(0)
    images = torch.randn(128, 1, 8, 8), torch.randint(0, 10, (128,))
    spirals = data.spirals(512, seed=0)
    found = {
        "MLP 20×64, sigmoid, 512 points": Case(models.mlp(20, 64, activation="sigmoid", seed=0),
                                               (spirals.x, spirals.y), 0.1, _labelled_loss),
        "MLP 20×64, ReLU + He, 512 points": Case(models.mlp(20, 64, activation="relu", init="kaiming", seed=0),
                                                 (spirals.x, spirals.y), 0.01, _labelled_loss),
        "CNN 3 conv, 8×8 images, batch 128": Case(small_cnn(), images, 0.01, _labelled_loss),
        "LSTM 32, seq_len 50, batch 64": Case(models.sequence_model("lstm", 32, seed=0),
                                              tuple(data.adding_problem(50, 64, seed=0, n_test=0))[:2], 0.01,
                                              _labelled_loss),
    }
    if large:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        import zoo  # nanoGPT as Karpathy wrote it (tests/zoo.py); torchvision's ResNet-18 is in the package

        g = torch.Generator().manual_seed(0)
        found["ResNet-18, 64×64 images, batch 16"] = Case(
            resnet18(10, seed=0), (torch.randn(16, 3, 64, 64, generator=g), torch.randint(0, 10, (16,), generator=g)),
            0.01, _labelled_loss, steps=LARGE_STEPS)
        torch.manual_seed(0)
        gpt = zoo.GPT(zoo.GPTConfig(block_size=64, vocab_size=256, n_layer=6, n_head=4, n_embd=128, bias=True))
        tokens = torch.randint(0, 256, (16, 65), generator=g)
        batch = (tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous())
        found["nanoGPT 6 layers, d 128, seq 64, batch 16"] = Case(gpt, batch, 0.01, _gpt_loss, steps=LARGE_STEPS)
    return found


def train_seconds(case: Case, every: int | None, probe_class=None) -> float:
    """CPU seconds per step of ``case.steps`` plain SGD steps on a copy of the case's model
    (probed every ``every``-th step).

    The clock is this thread's CPU time: on one torch thread the forward and backward passes run
    here, and time spent waiting for a core that other processes hold is not counted.
    """
    model = copy.deepcopy(case.model)
    opt = torch.optim.SGD(model.parameters(), lr=case.lr)
    probe = (probe_class or Probe)(model, every=every) if every else None

    def step():
        opt.zero_grad(set_to_none=True)
        case.loss(model, case.batch).backward()
        opt.step()

    if probe is not None:
        probe.__enter__()
    try:
        step()  # first step outside the clock (lazy allocations)
        start = time.thread_time()
        for _ in range(case.steps):
            step()
        return (time.thread_time() - start) / case.steps
    finally:
        if probe is not None:
            probe.__exit__(None, None, None)


def step_seconds(case: Case, variants: dict, rng: random.Random) -> dict[str, float]:
    """CPU seconds per step of each variant, trained side by side: ``variants`` maps a label to
    ``(probe_class, every)`` (``(None, None)``: bare), each variant trains its own copy of
    ``model``, and every round runs one step of each in a fresh random order."""
    with contextlib.ExitStack() as attached:
        trainers = {}
        for label, (probe_class, every) in variants.items():
            net = copy.deepcopy(case.model)
            if every:
                attached.enter_context(probe_class(net, every=every))
            trainers[label] = (net, torch.optim.SGD(net.parameters(), lr=case.lr))

        def step(net, opt):
            opt.zero_grad(set_to_none=True)
            case.loss(net, case.batch).backward()
            opt.step()

        for trainer in trainers.values():
            step(*trainer)  # first step outside the clock (lazy allocations); a probe records it
        spent = dict.fromkeys(trainers, 0.0)
        order = list(trainers)
        for _ in range(case.steps):
            rng.shuffle(order)
            for label in order:
                start = time.thread_time()
                step(*trainers[label])
                spent[label] += time.thread_time() - start
    return {label: seconds / case.steps for label, seconds in spent.items()}


def overhead(repeats: int) -> dict:
    """{case: {"bare": s, "every1": s, "every10": s, "ratio1": x, "ratio10": x}} (medians)."""
    torch.set_num_threads(1)
    rng = random.Random(0)
    variants = {"bare": (None, None), "every1": (Probe, 1), "every10": (Probe, 10),
                "peer1": (HandWrittenHooks, 1), "peer10": (HandWrittenHooks, 10)}
    results = {}
    for name, case in cases().items():
        runs = [step_seconds(case, variants, rng) for _ in range(repeats)]
        results[name] = {mode: statistics.median(r[mode] for r in runs) for mode in variants}
        results[name] |= {f"ratio{k}": statistics.median(r[f"every{k}"] / r["bare"] for r in runs) for k in (1, 10)}
        results[name] |= {f"peer_ratio{k}": statistics.median(r[f"peer{k}"] / r["bare"] for r in runs)
                          for k in (1, 10)}
    return results


#: The parts of a probe timed by ``--breakdown`` (times are inclusive: a method's includes the
#: measurements it calls).
PROBE_METHODS = ("_on_forward_start", "_on_module_input", "_on_module_output", "_on_forward_end",
                 "_on_backward_end", "_read_gradients", "_finish_update")
MEASUREMENTS = ("activation_sums", "sum_of_squares", "norms", "log2_histogram")


def breakdown(every: int = 1) -> str:
    """A Markdown table per case: CPU µs per step spent inside each part of the probe, and the bare step."""
    torch.set_num_threads(1)
    spent: dict[str, float] = {}

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            start = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] = spent.get(name, 0.0) + time.thread_time() - start
        return wrapper

    originals = {**{("Probe", n): getattr(Probe, n) for n in PROBE_METHODS},
                 **{("probes", n): getattr(probes_module, n) for n in MEASUREMENTS if hasattr(probes_module, n)}}
    lines = []
    for name, case in cases().items():
        bare = statistics.median(train_seconds(case, None) for _ in range(3))
        train_seconds(case, every)  # warms up (lazy allocations), untimed
        for (owner, attr), fn in originals.items():
            setattr(Probe if owner == "Probe" else probes_module, attr, timed(attr, fn))
        try:
            spent.clear()
            probed = train_seconds(case, every)
        finally:
            for (owner, attr), fn in originals.items():
                setattr(Probe if owner == "Probe" else probes_module, attr, fn)
        lines += [f"**{name}**, every={every}: bare {bare * 1e6:.0f} µs, probed {probed * 1e6:.0f} µs per step", "",
                  "| part | µs per step |", "|---|---|"]
        lines += [f"| `{part}` | {seconds / (case.steps + 1) * 1e6:.0f} |"
                  for part, seconds in sorted(spent.items(), key=lambda kv: -kv[1])]
        lines.append("")
    text = "\n".join(lines)
    print(text)
    return text


MEMORY_CHILD = """
import json, resource, sys, torch
from gradcourse import data, models
from gradcourse.train import fit
torch.set_num_threads(1)
steps, probe = int(sys.argv[1]), sys.argv[2] == "probe"
run = fit(models.mlp(20, 64, activation="sigmoid", seed=0), data.spirals(512, seed=0), steps=steps,
          lr=0.1, every=1, probe=probe, progress=False)
trace_bytes = sum(a.nbytes for a in run.trace.to_arrays()[0].values()) if probe else 0
print(json.dumps({"rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "records": len(run.trace.steps) if probe else 0, "trace_mb": trace_bytes / 2**20}))
"""


def memory_rows() -> list[tuple[int, dict, dict]]:
    """Peak RSS of a fresh process training bare and probed, at two run lengths."""
    rows = []
    for steps in (500, 2000):
        measured = []
        for mode in ("bare", "probe"):
            out = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(steps), mode],
                                 capture_output=True, text=True, check=True).stdout
            measured.append(json.loads(out.strip().splitlines()[-1]))
        rows.append((steps, *measured))
    return rows


STARTUP_CHILD = """
import json, resource, sys, time
start = time.perf_counter()
import torch
after_torch = time.perf_counter()
if sys.argv[1] == "torch":
    print(json.dumps({"import_s": after_torch - start}))
    raise SystemExit
import gradcourse
from gradcourse import data, models
from gradcourse.probes import Probe
after_gradcourse = time.perf_counter()
torch.set_num_threads(1)
spirals = data.spirals(512, seed=0)
net = models.mlp(20, 64, activation="sigmoid", seed=0)
opt = torch.optim.SGD(net.parameters(), lr=0.1)
step_start = time.perf_counter()
probe = Probe(net, optimizer=opt) if sys.argv[1] == "probe" else None
if probe is not None:
    probe.__enter__()
loss = torch.nn.functional.cross_entropy(net(spirals.x), spirals.y)
opt.zero_grad()
loss.backward()
opt.step()
if probe is not None:
    probe.__exit__(None, None, None)
    probe.trace
print(json.dumps({"import_s": after_gradcourse - start, "gradcourse_s": after_gradcourse - after_torch,
                  "first_step_s": time.perf_counter() - step_start}))
"""

RESNET_MEMORY_CHILD = """
import json, resource, sys, torch
from gradcourse.probes import Probe
from gradcourse.models import resnet18
torch.set_num_threads(1)
g = torch.Generator().manual_seed(0)
x, y = torch.randn(16, 3, 64, 64, generator=g), torch.randint(0, 10, (16,), generator=g)
net = resnet18(10, seed=0)
opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
probe = Probe(net, optimizer=opt, updates=sys.argv[1] == "probe") if sys.argv[1] != "bare" else None
if probe is not None:
    probe.__enter__()
for _ in range(3):
    opt.zero_grad()
    torch.nn.functional.cross_entropy(net(x), y).backward()
    opt.step()
held = 0
if probe is not None:
    probe.__exit__(None, None, None)
    held = sum(t.numel() * t.element_size() for t in probe._before or []) + probe._scratch.nbytes
print(json.dumps({"rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "held_mb": held / 2**20}))
"""


def startup_rows(repeats: int = 5) -> list[str]:
    """Markdown rows: import time, the first probed step (fresh processes, medians), and the peak
    memory of a few ResNet-18 steps bare and probed."""
    def child(code: str, mode: str) -> dict:
        out = subprocess.run([sys.executable, "-c", code, mode], capture_output=True, text=True, check=True).stdout
        return json.loads(out.strip().splitlines()[-1])

    runs = {mode: [child(STARTUP_CHILD, mode) for _ in range(repeats)] for mode in ("torch", "bare", "probe")}
    med = lambda mode, key: statistics.median(r[key] for r in runs[mode])  # noqa: E731
    resnet = {mode: child(RESNET_MEMORY_CHILD, mode) for mode in ("bare", "probe", "lean")}
    return [f"| `import torch` | {med('torch', 'import_s'):.2f} s |",
            f"| `import gradcourse` after torch | {med('probe', 'gradcourse_s'):.2f} s |",
            f"| first step of the MLP 20×64, bare (fresh process) | {med('bare', 'first_step_s'):.3f} s |",
            f"| first step probed (attach, step, detach, trace) | {med('probe', 'first_step_s'):.3f} s |",
            f"| ResNet-18 64×64 batch 16, 3 steps: peak RSS bare | {resnet['bare']['rss_mb']:.0f} MB |",
            f"| ... probed every step | {resnet['probe']['rss_mb']:.0f} MB (the probe holds "
            f"{resnet['probe']['held_mb']:.0f} MB: the weights before the step, and its scratch) |",
            f"| ... probed every step, `updates=False` (no update ratio) | {resnet['lean']['rss_mb']:.0f} MB "
            f"(the probe holds {resnet['lean']['held_mb']:.0f} MB: its scratch) |"]


def overhead_in_child(steady_heap: bool, repeats: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in STEADY_HEAP}
    if steady_heap:
        env.update(STEADY_HEAP)
    out = subprocess.run([sys.executable, __file__, "--child", str(repeats)], env=env,
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(repeats: int = REPEATS, memory: bool = True) -> str:
    lines = []
    for steady in (False, True):
        heap = (f"heap steadied: {' '.join(f'{k}={v}' for k, v in STEADY_HEAP.items())}" if steady
                else "glibc's default heap trimming")
        lines += [f"### Probe overhead, {heap}", "",
                  f"Median over {repeats} repeats; in each, three copies of the model (bare, probed every "
                  f"step, probed every 10th) take {STEPS} SGD steps ({LARGE_STEPS} for ResNet-18 "
                  "and nanoGPT) side by side, one step each in turn "
                  "(1 thread), with the hand-written hooks peer (`HandWrittenHooks`) beside them; the ratio "
                  "is taken within each repeat.", "",
                  "| model | bare | every=1 | ratio | peer ratio | every=10 | ratio | peer ratio |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, r in overhead_in_child(steady, repeats).items():
            lines.append(f"| {name} | {r['bare'] * 1e3:.2f} ms | {r['every1'] * 1e3:.2f} ms | {r['ratio1']:.2f}× "
                         f"| {r['peer_ratio1']:.2f}× | {r['every10'] * 1e3:.2f} ms | {r['ratio10']:.3f}× "
                         f"| {r['peer_ratio10']:.3f}× |")
        lines.append("")
    if memory:
        lines += ["### Start-up and memory", "", "| what | measured |", "|---|---|", *startup_rows(), ""]
        lines += ["### Memory of a probed run (MLP 20×64 sigmoid, every=1, max_records=1000)", "",
                  "| steps | peak RSS bare | peak RSS probed | records kept | trace arrays |",
                  "|---|---|---|---|---|"]
        for steps, bare, probed in memory_rows():
            lines.append(f"| {steps} | {bare['rss_mb']:.0f} MB | {probed['rss_mb']:.0f} MB | {probed['records']} "
                         f"| {probed['trace_mb']:.2f} MB |")
    text = "\n".join(lines)
    print(text)
    return text


def probe_at(revision: str, where: str):
    """The ``Probe`` class of git ``revision``: its ``gradcourse/`` exported under ``where`` as the
    package ``gradcourse_at_revision`` (relative imports keep it apart from this tree's)."""
    import importlib
    import io
    import tarfile

    archive = subprocess.run(["git", "archive", revision, "gradcourse"], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(where, filter="data")
    os.rename(os.path.join(where, "gradcourse"), os.path.join(where, "gradcourse_at_revision"))
    sys.path.insert(0, where)
    return importlib.import_module("gradcourse_at_revision.probes").Probe


def against(revision: str, repeats: int = 15) -> str:
    """This tree's probe against the probe of git ``revision``, side by side in one process: each
    repeat times a bare step, then both probes in a random order (every step, then every 10th).

    The variants run one after another, not step by step as in :func:`overhead`: a probe before
    2026-11-30 leaves its global forward hook on between its steps, which would tax the others."""
    import tempfile

    torch.set_num_threads(1)
    random.seed(0)
    with tempfile.TemporaryDirectory() as where:
        variants = (("old", probe_at(revision, where)), ("new", Probe))
        lines = [f"| model | bare | every=1, {revision} | every=1, this tree | every=10, {revision} "
                 "| every=10, this tree |", "|---|---|---|---|---|---|"]
        print("\n".join(lines), flush=True)
        for name, case in cases().items():
            times = {k: [] for k in ("bare", "old1", "new1", "old10", "new10")}
            for _ in range(repeats):
                times["bare"].append(train_seconds(case, None))
                for every in (1, 10):
                    for label, probe_class in random.sample(variants, 2):
                        times[f"{label}{every}"].append(
                            train_seconds(case, every, probe_class))
            r = {k: statistics.median(t / b for t, b in zip(v, times["bare"])) for k, v in times.items() if k != "bare"}
            lines.append(f"| {name} | {statistics.median(times['bare']) * 1e3:.2f} ms | {r['old1']:.2f}× "
                         f"| {r['new1']:.2f}× | {r['old10']:.3f}× | {r['new10']:.3f}× |")
            print(lines[-1], flush=True)
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        print(json.dumps(overhead(int(sys.argv[2]))))
    elif sys.argv[1:2] == ["--quick"]:
        main(repeats=5, memory=False)
    elif sys.argv[1:2] == ["--startup"]:
        print("\n".join(startup_rows()))
    elif sys.argv[1:2] == ["--breakdown"]:
        breakdown()
    elif sys.argv[1:2] == ["--against"] and len(sys.argv) == 3:
        against(sys.argv[2])
    else:
        main()
