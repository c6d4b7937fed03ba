"""Time the whole pipeline, stage by stage, for a vocabulary and a set of VOC-sized images.

    python benchmarks/pipeline.py                                          # GPU: V = 20, N = 32, M = 50
    python benchmarks/pipeline.py --quick                                  # tiny preset, CPU (script check)
    python benchmarks/pipeline.py --device cpu -V 1 -n 1 -M 1 --steps 1    # the paper's networks on a CPU

In a temporary work folder, the stage functions run in the order and with the defaults of the
commands (`ovdiff run` chains the same ones): sample (attention recorded; N images per class,
batch 8), attribute, mask (CutLER's detector), prototype (sd, dino, clip, one extractor at a
time), filter-stuff, classify (the CLIP pre-filter, batch 32) and segment, for the first V classes
of VOC and M synthetic 500 × 375 JPEGs (fixed seed). Precision is the commands' ``--dtype auto``:
on a GPU SD and the scorer in float16, the ViTs and CutLER in float32.

The networks are the paper's architectures with random weights (the weights cannot be downloaded
where this runs, and random ones cost the same time), registered as the preset
``paper-random-weights``; CutLER's detector gets the deterministic random weights of
tests/models/cutler_reference, and where those cannot be made the masks come from thresholding
(the output says which). ``--quick`` runs the built-in ``tiny`` preset instead, on one CPU thread,
with V = N = M = 2 and 2 steps. Models are built before the first stage and stay loaded, as within
`ovdiff run`; their building is reported apart, not in any stage.

Per stage: its unit (a sampled image, a class, a test image…), seconds in all and per unit, peak
memory (GPU: ``torch.cuda.max_memory_allocated``, reset before each stage; CPU: the process's
peak resident set, reset before each stage where Linux allows it), and the stage's share of the
total; then the offline phase (sample … filter-stuff) and the online phase (classify, segment).
``--json`` prints one JSON object on stdout instead of the table; notes go to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import resource
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.models.cutler_reference

from ovdiff_cli import log, options  # noqa: E402
from ovdiff_cli.core.settings import SampleSettings  # noqa: E402
from ovdiff_cli.errors import ModelUnavailable, OvdiffError  # noqa: E402
from ovdiff_cli.formats import tensorfile  # noqa: E402
from ovdiff_cli.formats.schemas import PROTOTYPES  # noqa: E402
from ovdiff_cli.formats.supportset import SupportSet  # noqa: E402
from ovdiff_cli.formats.vocabulary import Vocabulary, build, builtin  # noqa: E402
from ovdiff_cli.models import registry, sd  # noqa: E402
from ovdiff_cli.models.builtin import paper_architecture  # noqa: E402
from ovdiff_cli.models.components import Component, Preset  # noqa: E402
from ovdiff_cli.models.extractor_build import network_dtype  # noqa: E402
from ovdiff_cli.stages.attribute import attribute  # noqa: E402
from ovdiff_cli.stages.classify import classify_into  # noqa: E402
from ovdiff_cli.stages.filter_stuff import filter_stuff  # noqa: E402
from ovdiff_cli.stages.mask import mask  # noqa: E402
from ovdiff_cli.stages.prototype import prototype  # noqa: E402
from ovdiff_cli.stages.sample import sample  # noqa: E402
from ovdiff_cli.stages.segment import segment  # noqa: E402

RANDOM_PAPER = "paper-random-weights"
EXTRACTORS = ("sd", "dino", "clip")
OFFLINE = ("sample", "attribute", "mask", "prototype", "filter-stuff")
ONLINE = ("classify", "segment")
FULL = {"V": 20, "N": 32, "M": 50, "steps": 30}   # the GPU run
QUICK = {"V": 2, "N": 2, "M": 2, "steps": 2}      # CI: well under a minute on 2 CPU cores
#: The commands' batch sizes: `ovdiff classify` encodes 32 images at a time, the others 8.
BATCH, CLASSIFY_BATCH = 8, 32


# -- the preset: the paper's architectures, random weights ----------------------------------------

def _cutler_random(device: torch.device, dtype: torch.dtype) -> Any:
    from ovdiff_cli.models.rcnn.detector import CascadeMaskRCNN
    from tests.models.cutler_reference.weights import random_state_dict

    model = CascadeMaskRCNN()
    model.load_state_dict(random_state_dict())
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


def cutler_available() -> bool:
    """Whether CutLER's random weights can be made here (they come with the repository's tests)."""
    try:
        return importlib.util.find_spec("tests.models.cutler_reference.weights") is not None
    except ImportError:  # no tests package on the path
        return False


def random_paper_preset() -> Preset:
    """SD-1.5, DINO ViT-B/8, CLIP ViT-B/16 (extractor and scorer) and CutLER's cascade detector
    with random weights: every slot the pipeline loads, each built in code."""
    sd15 = Component("sd15-architecture-random-weights", "SD-1.5 architecture, random weights",
                     lambda _f, device, dtype: sd.build_sd15_random(device, dtype), tiny=True)
    slots = {"generator": sd15, "extractor.sd": sd15}
    for name, text in (("dino", "DINO ViT-B/8"), ("clip", "CLIP ViT-B/16")):
        slots[f"extractor.{name}"] = Component(
            f"{name}-architecture-random-weights", f"{text} architecture, random weights",
            lambda _f, device, dtype, name=name: paper_architecture(name, device, dtype), tiny=True)
    slots["scorer"] = slots["extractor.clip"]
    if cutler_available():
        slots["proposer.cutler"] = Component("cutler-architecture-random-weights",
                                             "CutLER Cascade Mask R-CNN architecture, random weights",
                                             lambda _f, device, dtype: _cutler_random(device, dtype), tiny=True)
    return Preset(RANDOM_PAPER, "the paper's architectures with random weights (benchmarks/pipeline.py)", slots,
                  tiny=True)


# -- measuring ---------------------------------------------------------------------------------------

class Memory:
    """Peak memory since :meth:`reset`, in bytes, and what kind of peak it is."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.kind = "GPU max_memory_allocated, reset per stage" if device.type == "cuda" else self._cpu_kind()

    @staticmethod
    def _cpu_kind() -> str:
        try:  # Linux resets the peak resident set (VmHWM) when 5 is written here (proc(5), clear_refs)
            Path("/proc/self/clear_refs").write_text("5")
            return "CPU peak RSS (VmHWM), reset per stage"
        except OSError:
            return "CPU peak RSS of the process so far (getrusage; not reset per stage)"

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        elif "reset per stage" in self.kind:
            Path("/proc/self/clear_refs").write_text("5")

    def peak(self) -> int:
        if self.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(self.device))
        if "reset per stage" in self.kind:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


@dataclass
class Row:
    """One stage (or one extractor of the prototype stage): seconds over ``units`` of ``unit``."""

    stage: str
    unit: str
    units: int
    seconds: float = 0.0
    peak_bytes: int = 0
    parts: list[Row] = field(default_factory=list)

    def as_dict(self, total: float | None) -> dict[str, Any]:
        d: dict[str, Any] = {"stage": self.stage, "unit": self.unit, "units": self.units, "seconds": self.seconds,
                             "seconds_per_unit": self.seconds / self.units, "peak_memory_bytes": self.peak_bytes}
        if total is not None:
            d["share"] = self.seconds / total
        if self.parts:
            d["parts"] = [p.as_dict(None) for p in self.parts]
        return d


class Timer:
    """Times stages in order, synchronising the GPU at each boundary."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.memory, self.rows = device, Memory(device), []

    def __call__(self, stage: str, unit: str, units: int) -> contextlib.AbstractContextManager[Row]:
        """Time one stage: ``with timer("sample", "sampled image", 640): ...``."""
        row = Row(stage, unit, units)
        self.rows.append(row)
        return self._measure(row)

    def part(self, row: Row, name: str, unit: str, units: int) -> contextlib.AbstractContextManager[Row]:
        """Time a part of ``row`` (one extractor of the prototype stage), inside ``row``'s block."""
        part = Row(name, unit, units)
        row.parts.append(part)
        return self._measure(part)

    @contextlib.contextmanager
    def _measure(self, row: Row) -> Iterator[Row]:
        self.memory.reset()
        start = time.perf_counter()
        yield row
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        row.seconds = time.perf_counter() - start
        # a part resets the peak as it starts: the row's peak is the largest of its parts' and its own
        row.peak_bytes = max([self.memory.peak()] + [p.peak_bytes for p in row.parts])
        log.logger.info("%s: %.2f s", row.stage, row.seconds)


# -- inputs --------------------------------------------------------------------------------------------

def vocabulary(v: int) -> Vocabulary:
    """The first ``v`` classes of VOC (VOC itself for all 20)."""
    voc = builtin("voc")
    if v == len(voc):
        return voc
    return build(f"voc-first-{v}", [(c.name, c.prompt, c.kind) for c in voc.classes[:v]])


def synthetic_images(folder: Path, m: int, seed: int = 0) -> list[Path]:
    """``m`` 500 × 375 JPEGs (VOC's usual size): 25-pixel blocks of colour with noise, fixed seed."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    paths = []
    for i in range(m):
        blocks = rng.integers(0, 256, (15, 20, 3), dtype=np.uint8)
        rgb = np.kron(blocks, np.ones((25, 25, 1), np.uint8)).astype(np.int16)
        rgb = np.clip(rgb + rng.integers(-20, 21, rgb.shape), 0, 255).astype(np.uint8)
        path = folder / f"{i:05d}.jpg"
        Image.fromarray(rgb).save(path, quality=90)
        paths.append(path)
    return paths


# -- the run -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Setup:
    preset: str
    device: torch.device
    dtype: torch.dtype       # SD's and the scorer's (`--dtype`)
    vit_dtype: torch.dtype   # the ViTs' and CutLER's (float32 under `--dtype auto`)
    v: int
    n: int
    m: int
    steps: int
    batch_size: int


def preload(s: Setup) -> float:
    """Build every model the stages load, in the precision each stage asks for; returns seconds.

    The registry keeps them (per component, device and precision), so the stages find them loaded.
    """
    p = registry.get_preset(s.preset)
    wanted = [("generator", s.dtype), ("scorer", s.dtype)]
    wanted += [(f"extractor.{e}", network_dtype(e, s.dtype, s.vit_dtype)) for e in EXTRACTORS]
    start = time.perf_counter()
    for slot, dtype in wanted:
        registry.load(p, slot, s.device, dtype)
    if "proposer.cutler" in p.slots:
        try:
            registry.load(p, "proposer.cutler", s.device, s.vit_dtype)
        except ModelUnavailable:
            pass  # `--models paper` without CutLER's file: the mask stage thresholds instead, and says so
    if s.device.type == "cuda":
        torch.cuda.synchronize(s.device)
    return time.perf_counter() - start


def run_stages(s: Setup, work: Path, timer: Timer) -> dict[str, Any]:
    """Every stage in order, each called as its command calls it; returns what ran (proposer, k-means)."""
    vocab = vocabulary(s.v)
    images = synthetic_images(work / "images", s.m)
    models = {"preset": s.preset, "device": s.device}
    settings = SampleSettings(num_images=s.n, steps=s.steps, batch_size=s.batch_size)
    with timer("sample", "sampled image", s.v * s.n):
        folders = sample(vocab.classes, out=work / "support", dtype=s.dtype, settings=settings, **models)
    with timer("attribute", "class", s.v):
        attribute(folders, batch_size=s.batch_size)
    with timer("mask", "support image", s.v * s.n):
        # `ovdiff mask`: CutLER runs in the ViTs' precision (float32 under --dtype auto)
        mask(folders, proposer="auto", dtype=s.vit_dtype, batch_size=s.batch_size, **models)
    protos: list[Path] = []
    with timer("prototype", "class", s.v) as row:
        for ex in EXTRACTORS:  # one extractor at a time, to see each one's cost (`ovdiff prototype -x ex`)
            with timer.part(row, f"prototype {ex}", "class", s.v):
                protos += prototype(folders, extractors=[ex], out=work / "prototypes", dtype=s.dtype,
                                    vit_dtype=s.vit_dtype, batch_size=s.batch_size, **models)
    with timer("filter-stuff", "class", s.v):
        banks = [path for path, _ in filter_stuff(protos, vocab, out=work / "banks")]
    with timer("classify", "test image", s.m):
        candidates = classify_into(images, vocab, path=work / "candidates.jsonl", dtype=s.dtype,
                                   batch_size=CLASSIFY_BATCH, **models)
    with timer("segment", "test image", s.m):
        segment(images, banks, out=work / "segmentation", dtype=s.dtype, vit_dtype=s.vit_dtype,
                candidates=candidates, batch_size=s.batch_size, **models)
    return {"proposer": proposer_used(folders[0]), "kmeans": kmeans_used(protos)}


def proposer_used(folder: Path) -> str:
    """The proposer the first mask records (``cutler`` or ``threshold``)."""
    meta = SupportSet(folder).read_mask(0)[1]
    settings = meta.get("settings")
    found = settings.get("proposer") if isinstance(settings, dict) else meta.get("proposer")
    return str(found) if found else "unknown"


def kmeans_used(protos: list[Path]) -> str:
    """The k-means each prototype file records (``settings.kmeans``), one word when all agree, else by extractor."""
    seen: dict[str, str] = {}
    for path in protos:
        meta = tensorfile.read(path, PROTOTYPES, load=False).meta
        seen.setdefault(str(meta["extractor"]), str(meta["settings"]["kmeans"]))
    values = set(seen.values())
    return values.pop() if len(values) == 1 else ", ".join(f"{k}: {v}" for k, v in seen.items())


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} torch thread(s))"


def report(s: Setup, rows: list[Row], memory_kind: str, load_s: float, ran: dict[str, Any]) -> dict[str, Any]:
    total = sum(r.seconds for r in rows)
    by = {r.stage: r.seconds for r in rows}
    return {"device": device_name(s.device), "dtype": str(s.dtype).removeprefix("torch."),
            "vit_dtype": str(s.vit_dtype).removeprefix("torch."), "V": s.v, "N": s.n, "M": s.m, "steps": s.steps,
            "preset": s.preset, "batch_size": s.batch_size, "proposer": ran["proposer"], "kmeans": ran["kmeans"],
            "memory": memory_kind, "models_built_s": load_s,
            "stages": [r.as_dict(total) for r in rows], "offline_s": sum(by[k] for k in OFFLINE),
            "online_s": sum(by[k] for k in ONLINE), "total_s": total}


def table(r: dict[str, Any]) -> str:
    """The report as an aligned plain-text table."""
    lines = [f"{r['device']}, {r['dtype']} (ViTs, CutLER {r['vit_dtype']}), V = {r['V']}, N = {r['N']}, "
             f"M = {r['M']}, {r['steps']} steps, preset {r['preset']}",
             f"masks: {r['proposer']}; k-means: {r['kmeans']}; batch {r['batch_size']}; models built in "
             f"{r['models_built_s']:.1f} s (not counted; they stay loaded, so peaks include their weights); "
             f"memory: {r['memory']}",
             f"{'stage':<16} {'unit':<14} {'units':>6} {'s total':>9} {'s/unit':>9} {'peak GiB':>9} {'share':>7}"]

    def line(d: dict[str, Any], name: str) -> str:
        share = f"{d['share']:>7.1%}" if "share" in d else " " * 7
        return (f"{name:<16} {d['unit']:<14} {d['units']:>6} {d['seconds']:>9.2f} {d['seconds_per_unit']:>9.3f} "
                f"{d['peak_memory_bytes'] / 2**30:>9.2f} {share}")

    for d in r["stages"]:
        lines.append(line(d, d["stage"]))
        lines += [line(p, "  " + p["stage"].split()[-1]) for p in d.get("parts", [])]
    lines.append(f"offline (sample … filter-stuff) {r['offline_s']:.2f} s, online (classify, segment) "
                 f"{r['online_s']:.2f} s, total {r['total_s']:.2f} s")
    return "\n".join(lines)


def main() -> None:
    try:
        bench()
    except OvdiffError as e:  # a bad option or a missing model: one line, as the commands say it
        raise SystemExit(f"pipeline.py: error: {e}") from None


def bench() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-V", "--classes", type=int, help="the first V classes of VOC (default 20; --quick 2)")
    parser.add_argument("-n", "--num-images", type=int, help="support images per class (default 32; --quick 2)")
    parser.add_argument("-M", "--test-images", type=int, help="500 × 375 test images (default 50; --quick 2)")
    parser.add_argument("--steps", type=int, help="sampling steps (default 30; --quick 2)")
    parser.add_argument("--device", help="auto, cpu or cuda[:N] (default auto; --quick cpu)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"],
                        help="as the commands' --dtype: auto = SD and the scorer float16 on a GPU, else float32")
    parser.add_argument("--batch-size", type=int, default=BATCH,
                        help=f"images per forward pass, as `ovdiff run --batch-size` (default {BATCH}; "
                             f"classify keeps its {CLASSIFY_BATCH})")
    parser.add_argument("--models", help=f"preset (default {RANDOM_PAPER}; --quick tiny; paper: real weights)")
    parser.add_argument("--threads", type=int, help="torch's CPU threads (default torch's choice; --quick 1)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny preset on the CPU, V = N = M = 2, 2 steps, 1 thread")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout instead of the table")
    args = parser.parse_args()
    sizes = QUICK if args.quick else FULL
    device = options.resolve_device(args.device or ("cpu" if args.quick else "auto"))
    dtype, vit_dtype = options.resolve_dtypes(args.dtype, device)
    s = Setup(args.models or ("tiny" if args.quick else RANDOM_PAPER), device, dtype, vit_dtype,
              args.classes or sizes["V"], args.num_images or sizes["N"], args.test_images or sizes["M"],
              args.steps or sizes["steps"], args.batch_size)
    if min(s.v, s.n, s.m, s.steps, s.batch_size) < 1 or s.v > len(builtin("voc")):
        raise SystemExit("pipeline.py: error: -V must be 1 … 20; -n, -M, --steps and --batch-size at least 1")
    if args.threads or args.quick:
        # --quick: one thread. Toy networks gain nothing from two, and on a busy machine (CI beside
        # other jobs) two spinning threads made the tiny UNet's passes ~20 times slower here.
        torch.set_num_threads(args.threads or 1)
    log.set_verbosity(0)  # stage notes on stderr, stdout keeps the table or the JSON
    if s.preset == RANDOM_PAPER:
        registry.register_preset(random_paper_preset(), replace_existing=True)
        if device.type == "cpu" and s.v * s.n + s.m > 8:
            log.logger.warning("the paper's networks on a CPU take minutes per image; see the docstring for a "
                               "spot check (-V 1 -n 1 -M 1 --steps 1)")
    timer = Timer(device)
    load_s = preload(s)
    with tempfile.TemporaryDirectory(prefix="ovdiff-pipeline-") as tmp:
        ran = run_stages(s, Path(tmp), timer)
    r = report(s, timer.rows, timer.memory.kind, load_s, ran)
    print(json.dumps(r) if args.json else table(r))


if __name__ == "__main__":
    main()
