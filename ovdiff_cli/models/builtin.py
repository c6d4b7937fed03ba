"""The built-in presets: ``paper`` (the method's models) and ``tiny`` (toy, random weights).

``paper`` (docs/method.md §1, §3.1, §4.1): Stable Diffusion 1.5 in fp16, DINO ViT-B/8, OpenAI CLIP
ViT-B/16 through open_clip, the long-sequence MAE ViT-B/16 at 448 (and ViT-L/16 for
``--mae-variant l16``), CutLER's cascade detector. Weights come from the Hugging Face cache or
torch's hub cache; ``ovdiff models download`` fills both.

``tiny``: the same families at toy width with random weights under fixed seeds, built in code in
well under a second, for tests and offline runs. Everything it makes is marked tiny.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ovdiff_cli.errors import BadFile
from ovdiff_cli.models import clip, cutler, sd, vit
from ovdiff_cli.models.components import Component, Preset
from ovdiff_cli.models.sources import HubFiles, UrlFile

DINO_URL = "https://dl.fbaipublicfiles.com/dino/dino_vitbase8_pretrain/dino_vitbase8_pretrain.pth"
MAE_B16_URL = ("https://dl.fbaipublicfiles.com/long_seq_mae/pretrained_models/in1k/"
               "vitb_dec384d12h8b_1600ep_img448_crop0.2-1.0_maskds2.pth")
MAE_L16_URL = ("https://dl.fbaipublicfiles.com/long_seq_mae/pretrained_models/in1k/"
               "vitl_dec512d16h8b_1600ep_img448_crop0.2-1.0_maskds2.pth")

DINO_B8 = vit.ViTConfig(patch=8, dim=768, depth=12, heads=12, pos_grid=28, keeps_aspect=True)  # trained at 224
MAE_B16 = vit.ViTConfig(patch=16, dim=768, depth=12, heads=12, pos_grid=28)     # trained at 448
MAE_L16 = vit.ViTConfig(patch=16, dim=1024, depth=24, heads=16, pos_grid=28)

TINY_DINO = vit.ViTConfig(patch=8, dim=32, depth=3, heads=4, pos_grid=8, keeps_aspect=True)
TINY_MAE = vit.ViTConfig(patch=16, dim=32, depth=3, heads=4, pos_grid=8)


def _vit_loader(cfg: vit.ViTConfig, filename: str, name: str):
    def load(files: dict[str, Path], device: torch.device, dtype: torch.dtype) -> vit.ViT:
        path = files[filename]
        try:
            # MAE training checkpoints also store their argparse settings; allow just that class.
            with torch.serialization.safe_globals([argparse.Namespace]):
                state = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
                state = state["model"]  # MAE checkpoints wrap the weights
            model = vit.load_checkpoint(vit.ViT(cfg), state)
        except Exception as e:  # unpickling and shape errors of a corrupt or foreign checkpoint
            raise BadFile(path, f"is not a {name} checkpoint ({' '.join(str(e).split())[:120]})",
                          fix="delete it and run `ovdiff models download paper`") from None
        model.name = name  # type: ignore[assignment]
        return model.to(device=device, dtype=dtype).eval().requires_grad_(False)

    return load


def _tiny_vit(cfg: vit.ViTConfig, seed: int, name: str):
    def build(_files: dict[str, Path], device: torch.device, dtype: torch.dtype) -> vit.ViT:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = vit.ViT(cfg)
            for pname, p in model.named_parameters():
                if "norm" not in pname:  # LayerNorms keep their identity initialisation
                    torch.nn.init.normal_(p, std=0.02)
        model.name = name  # type: ignore[assignment]
        return model.to(device=device, dtype=dtype).eval().requires_grad_(False)

    return build


def paper_preset() -> Preset:
    sd15 = Component("sd15", "Stable Diffusion 1.5, fp16 weights", sd.load_sd15,
                     (HubFiles(sd.SD15_REPO, sd.SD15_FILES),))
    safety = Component("sd15-safety-checker", "Stable Diffusion 1.5 safety checker", sd.load_safety_checker,
                       (HubFiles(sd.SD15_REPO, sd.SD15_SAFETY_FILES),), optional=True)
    dino = Component("dino-vitb8", "DINO ViT-B/8 (keys of the last block)",
                     _vit_loader(DINO_B8, "dino_vitbase8_pretrain.pth", "dino-vitb8"),
                     (UrlFile(DINO_URL, "dino_vitbase8_pretrain.pth"),))
    clip_b16 = Component("clip-vitb16-openai", "OpenAI CLIP ViT-B/16 via open_clip", clip.load_openai_b16,
                         (HubFiles(clip.CLIP_REPO, clip.CLIP_FILES),))
    mae_b = Component("mae-vitb16-448", "long-sequence MAE ViT-B/16 at 448",
                      _vit_loader(MAE_B16, MAE_B16_URL.rsplit("/", 1)[1], "mae-vitb16-448"),
                      (UrlFile(MAE_B16_URL, MAE_B16_URL.rsplit("/", 1)[1]),), optional=True)
    mae_l = Component("mae-vitl16-448", "long-sequence MAE ViT-L/16 at 448 (paper v1)",
                      _vit_loader(MAE_L16, MAE_L16_URL.rsplit("/", 1)[1], "mae-vitl16-448"),
                      (UrlFile(MAE_L16_URL, MAE_L16_URL.rsplit("/", 1)[1]),), optional=True)
    cut = Component("cutler-cascade", f"CutLER Cascade Mask R-CNN R50-FPN ({cutler.LICENCE})", cutler.load_cutler,
                    (UrlFile(cutler.CUTLER_URL, cutler.CUTLER_FILE),))
    return Preset("paper", "the models of the paper (real weights; `ovdiff models download paper`)", {
        "generator": sd15, "safety_checker": safety, "extractor.sd": sd15, "extractor.dino": dino,
        "extractor.clip": clip_b16, "extractor.mae": mae_b, "extractor.mae-l16": mae_l,
        "scorer": clip_b16, "proposer.cutler": cut,
    })


def tiny_preset() -> Preset:
    tiny_sd = Component("tiny-sd", "SD-1.5 layout at toy width, random weights",
                        lambda _f, device, dtype: sd.build_tiny_sd(device, dtype), tiny=True)
    tiny_clip = Component("tiny-clip", "toy open_clip CLIP, random weights",
                          lambda _f, device, dtype: clip.build_tiny_clip(device, dtype), tiny=True)
    dino = Component("tiny-dino", "toy ViT/8, random weights", _tiny_vit(TINY_DINO, 1, "tiny-dino"), tiny=True)
    mae = Component("tiny-mae", "toy ViT/16, random weights", _tiny_vit(TINY_MAE, 2, "tiny-mae"), tiny=True)
    return Preset("tiny", "toy networks with random weights, built in code (tests, offline smoke runs)", {
        "generator": tiny_sd, "extractor.sd": tiny_sd, "extractor.dino": dino, "extractor.clip": tiny_clip,
        "extractor.mae": mae, "scorer": tiny_clip,
    }, tiny=True)


def builtin_presets() -> list[Preset]:
    return [paper_preset(), tiny_preset()]


def paper_architecture(name: str, device: torch.device, dtype: torch.dtype):
    """The paper's network for extractor ``name`` (sd, dino, clip, mae) with random weights, for
    timing where the weights cannot be downloaded (benchmarks). Outputs made with it say tiny."""
    if name == "sd":
        return sd.build_sd15_random(device, dtype)
    if name == "clip":
        import open_clip

        model = open_clip.create_model("ViT-B-16-quickgelu", device=device, precision="fp32")
        model = model.to(dtype=dtype).eval().requires_grad_(False)
        return clip.OpenClip("clip-vitb16-random-weights", model, open_clip.get_tokenizer("ViT-B-16"), tiny=True)
    cfg = {"dino": DINO_B8, "mae": MAE_B16}[name]
    model = vit.ViT(cfg).to(device=device, dtype=dtype).eval().requires_grad_(False)
    model.name = f"{name}-architecture-random-weights"  # type: ignore[assignment]
    return model
