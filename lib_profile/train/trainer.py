"""The face LoRA trainer: intake folder + SD1.5 checkpoint -> a kohya LoRA chosen by identity score.

Runs in its own process. Speed by design: VAE latents (of each crop and its mirror) and the caption
embeddings are computed once; every step is then one UNet forward/backward on cached tensors; the
loss is read back only at log steps. All randomness comes from one CPU generator whose state is saved
with each checkpoint, so a cancelled run resumed with ``--resume`` ends with the same weights as an
uninterrupted one. Every ``validate_every`` steps it renders fixed validation portraits, scores them
with the intake's identity embedder against the person's reference embedding, and keeps that
checkpoint; at the end the best one (or the average of the top k) is exported.
"""

from __future__ import annotations

import json
import secrets
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional, TextIO

import numpy as np
from PIL import Image

from lib_profile import __version__
from lib_profile.hosts.base import HostError
from lib_profile.train import lora as L
from lib_profile.train.runlock import RunLock
from lib_profile.train.step import TrainStep, make_scaler, needs_scaler

VALIDATION_NEGATIVE = "blurry, lowres, deformed"  # the validation portraits' negative prompt

CANCELLED = 3  # exit code of a cancelled run (a resumable checkpoint is on disk)


@dataclass
class TrainConfig:
    name: str
    steps: int = 800
    rank: int = 32
    alpha: float = 32.0
    learning_rate: float = 1e-4
    batch_size: int = 4
    resolution: int = 512
    seed: int = 1234
    clip_skip: int = 2
    feed_forward: bool = False
    train_text_encoder: bool = False
    gradient_checkpointing: Optional[bool] = None  # None: on when the GPU has under 12 GB free
    optimizer: str = "adamw"  # "adamw" (fused on GPU) or "adamw8bit" (needs bitsandbytes)
    cuda_graph: bool = True  # on a GPU, replay each step as one CUDA graph (lib_profile/train/step.py)
    validate_every: int = 100
    validation_images: int = 4
    validation_steps: int = 20
    validation_size: Optional[int] = None  # default: the training resolution
    select: str = "top3"  # "best" checkpoint, "topK" average of the K best, or "last"
    log_every: int = 10
    save_every: int = 50
    device: Optional[str] = None
    identity_in_lora: bool = True  # the face embedding in the LoRA's metadata (else only in the .identity.json beside it)

    def validate(self) -> None:
        import re

        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", self.name or "") or ".." in self.name:
            raise HostError(f"name must be 1-64 letters, digits, '_', '-' or '.', not {self.name!r}")
        checks = [
            (self.steps >= 1, f"steps must be at least 1, not {self.steps}"),
            (1 <= self.rank <= 256, f"rank must be within 1..256, not {self.rank}"),
            (0 < self.alpha <= 1024, f"alpha must be within (0, 1024], not {self.alpha}"),
            (0 < self.learning_rate < 1, f"learning rate must be within (0, 1), not {self.learning_rate}"),
            (1 <= self.batch_size <= 64, f"batch size must be within 1..64, not {self.batch_size}"),
            (64 <= self.resolution <= 1024 and self.resolution % 64 == 0,
             f"resolution must be a multiple of 64 within 64..1024, not {self.resolution}"),
            (1 <= self.clip_skip <= 4, f"clip skip must be within 1..4, not {self.clip_skip}"),
            (self.validate_every >= 1 and self.validation_images >= 0, "validate_every must be >= 1"),
            (self.optimizer in ("adamw", "adamw8bit"), f"optimizer must be adamw or adamw8bit, not {self.optimizer}"),
            (self.select in ("best", "last") or re.fullmatch(r"top[1-9]", self.select) is not None,
             f"select must be best, last or top1..top9, not {self.select}"),
        ]
        for ok, message in checks:
            if not ok:
                raise HostError(message)


@dataclass
class IntakeData:
    crops: list[Path]
    captions: list[str]
    reference: Optional[np.ndarray]
    embedder: str
    token: str
    class_word: str


def read_intake(folder: str | Path) -> IntakeData:
    folder = Path(folder)
    report = folder / "report.json"
    if not report.is_file():
        raise HostError(f"{folder} is not an intake folder (no report.json); run `python -m lib_profile intake` first.")
    rep = json.loads(report.read_text("utf-8"))
    crops = sorted((folder / "train").glob("*.png"))
    if not crops:
        raise HostError(f"The intake in {folder} has no accepted photos; add photos and run intake again.")
    if not rep.get("ready", False):
        raise HostError(f"The intake in {folder} is not ready to train: {rep.get('next_step', '')}")
    captions = [(c.with_suffix(".txt").read_text("utf-8").strip() if c.with_suffix(".txt").is_file()
                 else rep.get("caption", "")) for c in crops]
    ident = folder / "identity.json"
    reference, embedder = None, rep.get("identity", {}).get("embedder", "dlib")
    if ident.is_file():
        data = json.loads(ident.read_text("utf-8"))
        reference, embedder = np.asarray(data["vector"], np.float32), data["embedder"]
    return IntakeData(crops, captions, reference, embedder, rep.get("token", "ohwx"), rep.get("class_word", "person"))


TICK_S = 0.5  # at most two progress ticks a second between log steps (no loss: that would wait for the GPU)


class Events:
    """JSON lines, one per event, to a stream (stdout) or appended to a file the extension reads."""

    def __init__(self, sink: TextIO | str | Path | None):
        self._own = isinstance(sink, (str, Path))
        self._out = open(sink, "a", encoding="utf-8") if self._own else sink

    def __call__(self, event: str, **data) -> None:
        if self._out is None:
            return
        self._out.write(json.dumps({"event": event, "time": round(time.time(), 3), **data}) + "\n")
        self._out.flush()

    def close(self) -> None:
        if self._own and self._out:
            self._out.close()


class Cancel:
    """Set by SIGTERM or by a cancel file appearing; checked once per step."""

    def __init__(self, cancel_file: Path):
        self.file = cancel_file
        self.flag = False
        self._old = None

    def install(self) -> None:
        try:
            self._old = signal.signal(signal.SIGTERM, self._on_signal)
        except ValueError:  # not the main thread (tests): the cancel file still works
            self._old = None

    def restore(self) -> None:
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)

    def _on_signal(self, *_):
        self.flag = True

    def __bool__(self) -> bool:
        return self.flag or self.file.exists()


class Trainer:
    def __init__(self, intake: str | Path, checkpoint: str | Path, out: str | Path, config: TrainConfig,
                 events: Events | None = None, data_dir: str | Path | None = None):
        config.validate()
        self.cfg = config
        self.intake = read_intake(intake)
        self.out = Path(out)
        self.events = events or Events(None)
        self.checkpoint = checkpoint
        self.data_dir = data_dir
        self.state_file = self.out / "state" / "state.pt"

    # ------------------------------------------------------------------ setup

    def prepare(self) -> None:
        """Load the model, add the LoRA layers and cache latents and text (once)."""
        if getattr(self, "_prepared", False):
            return
        self.events("phase", phase="load")
        self._load()
        self.events("phase", phase="cache", images=len(self.intake.crops))
        self._cache()
        self._prepared = True

    def denoising_loss(self, seed: int = 0, timesteps: tuple[int, ...] = (100, 300, 500, 700, 900)) -> float:
        """Mean noise-prediction error over every crop at fixed timesteps and noise (for measuring)."""
        import torch
        import torch.nn.functional as F
        from diffusers import DDPMScheduler

        from lib_profile.hosts.diffusers.checkpoint import SCHEDULER_CONFIG

        self.prepare()
        alphas = DDPMScheduler.from_config(SCHEDULER_CONFIG).alphas_cumprod.to(self.device)
        gen = torch.Generator().manual_seed(seed)
        total, count = 0.0, 0
        self.model.unet.eval()
        with torch.no_grad(), torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.gpu):
            for i in range(len(self.intake.crops)):
                lat = self.latents[i, 0:1]
                cond = self._text(self.caption_index[i:i + 1])
                for t in timesteps:
                    noise = torch.randn(lat.shape, generator=gen).to(self.device, lat.dtype)
                    a = alphas[t]
                    pred = self.model.unet(a.sqrt() * lat + (1 - a).sqrt() * noise,
                                           torch.tensor([t], device=self.device), encoder_hidden_states=cond).sample
                    total += float(F.mse_loss(pred.float(), noise.float()))
                    count += 1
        self.model.unet.train()
        return total / count

    def _load(self):
        import torch

        from lib_profile.hosts.diffusers.host import resolve_checkpoint
        from lib_profile.hosts.diffusers.checkpoint import load_sd15
        from lib_profile import paths

        cfg = self.cfg
        self.device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.gpu = self.device.type == "cuda"
        self.amp_dtype = torch.bfloat16 if self.gpu and torch.cuda.is_bf16_supported() else torch.float16
        path = resolve_checkpoint(self.checkpoint, self.data_dir)
        self.model = load_sd15(path, paths.tokenizer_dir(self.data_dir))
        self.model_path = path
        m = self.model
        # frozen weights in half precision on a GPU (the LoRA layers stay float32 for the optimiser)
        frozen = self.amp_dtype if self.gpu else torch.float32
        m.unet.to(self.device, frozen).requires_grad_(False)
        m.text_encoder.to(self.device, frozen).requires_grad_(False)
        m.vae.to(self.device).requires_grad_(False)
        if self.gpu:
            free = torch.cuda.mem_get_info(self.device)[0] / 2**30
            if free < 5.5:
                raise HostError(f"The GPU has {free:.1f} GB free; training needs about 6 GB. Close other programs "
                                "(or unload the WebUI's model) and try again.")
            if cfg.gradient_checkpointing is None:
                cfg.gradient_checkpointing = free < 12
        if cfg.gradient_checkpointing:
            m.unet.enable_gradient_checkpointing()
        m.unet.train()
        self.layers = L.inject(m.unet, m.text_encoder, cfg.rank, cfg.alpha, cfg.seed,
                               feed_forward=cfg.feed_forward, train_text=cfg.train_text_encoder)

    def _cache(self):
        """Latents of every crop and its mirror, and the caption embeddings, computed once."""
        import torch

        from lib_profile.prompts import parse as prompts

        m, res = self.model, self.cfg.resolution
        latents = []
        with torch.no_grad():
            for path in self.intake.crops:
                img = Image.open(path).convert("RGB").resize((res, res), Image.LANCZOS)
                arr = torch.from_numpy(np.asarray(img, np.float32) / 127.5 - 1.0).permute(2, 0, 1)
                pair = torch.stack([arr, arr.flip(-1)]).to(self.device)
                dist = m.vae.encode(pair).latent_dist
                latents.append(dist.mean * m.vae.config.scaling_factor)
        self.latents = torch.stack(latents)  # (N, 2, 4, h, w): [crop, mirror]
        self.unique_captions = sorted(set(self.intake.captions))
        self.caption_index = torch.tensor([self.unique_captions.index(c) for c in self.intake.captions])
        if not self.cfg.train_text_encoder:
            with torch.no_grad():
                self.text_cache = torch.cat([prompts.encode(m.text_encoder, m.tokenizer, c, self.cfg.clip_skip)[0]
                                             for c in self.unique_captions])

    def _text(self, index):
        """Caption conditioning for a batch: from the cache, or encoded now when the text encoder trains."""
        import torch

        from lib_profile.prompts import parse as prompts

        if not self.cfg.train_text_encoder:
            return self.text_cache[index.to(self.text_cache.device)]
        m = self.model
        return torch.cat([prompts.encode(m.text_encoder, m.tokenizer, self.unique_captions[i], self.cfg.clip_skip)[0]
                          for i in index.tolist()])

    def _optimizer(self):
        import torch

        params = L.parameters(self.layers)
        if self.cfg.optimizer == "adamw8bit":
            try:
                import bitsandbytes as bnb
            except ImportError as exc:
                raise HostError("optimizer adamw8bit needs bitsandbytes: pip install bitsandbytes") from exc
            return bnb.optim.AdamW8bit(params, lr=self.cfg.learning_rate)
        return torch.optim.AdamW(params, lr=self.cfg.learning_rate, weight_decay=1e-2, fused=self.gpu or None,
                                 capturable=self._graphed())

    def _graphed(self) -> bool:
        """Whether the training step runs as a CUDA graph: on a GPU, with cached captions and plain AdamW."""
        cfg = self.cfg
        return (self.gpu and cfg.cuda_graph and not cfg.train_text_encoder and cfg.optimizer == "adamw"
                and not needs_scaler(self.amp_dtype, self.device))  # a loss scaler checks for inf on the host

    # ------------------------------------------------------------------ checkpoints

    def _save_state(self, step: int, gen, optimizer, history: list) -> None:
        import torch

        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".partial")
        torch.save({"step": step, "lora": L.kohya_state(self.layers), "optimizer": optimizer.state_dict(),
                    "generator": gen.get_state(), "history": history, "config": asdict(self.cfg)}, tmp)
        tmp.replace(self.state_file)

    def _load_state(self, gen, optimizer) -> tuple[int, list]:
        import torch

        if not self.state_file.is_file():
            raise HostError(f"Nothing to resume in {self.out}: no saved state. Start without --resume.")
        state = torch.load(self.state_file, map_location="cpu", weights_only=False)
        saved = dict(state["config"])
        now = asdict(self.cfg)
        differ = [k for k in ("rank", "alpha", "learning_rate", "batch_size", "resolution", "seed", "clip_skip",
                              "feed_forward", "train_text_encoder", "optimizer") if saved.get(k) != now.get(k)]
        if differ:
            raise HostError(f"Cannot resume with different settings ({', '.join(differ)}); use the first run's.")
        L.load_kohya_state(self.layers, state["lora"])
        optimizer.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        return int(state["step"]), list(state["history"])

    # ------------------------------------------------------------------ the run

    def run(self, resume: bool = False, cancel_file: Optional[Path] = None) -> dict[str, Any]:
        """Train (or continue from the saved state with ``resume``); returns ``{"file", "report"}``, or
        ``{"cancelled": True, "step"}`` when stopped. Holds the run folder's lock throughout: raises
        :class:`~lib_profile.train.runlock.RunLocked` at once when another trainer is writing there."""
        with RunLock(self.out):
            return self._run(resume, cancel_file)

    def _run(self, resume: bool, cancel_file: Optional[Path]) -> dict[str, Any]:
        import torch
        from diffusers import DDPMScheduler

        from lib_profile.hosts.diffusers.checkpoint import SCHEDULER_CONFIG

        cfg, ev = self.cfg, self.events
        self.out.mkdir(parents=True, exist_ok=True)
        cancel = Cancel(Path(cancel_file) if cancel_file else self.out / "CANCEL")
        cancel.file.unlink(missing_ok=True)
        cancel.install()
        started = time.time()
        try:
            self.prepare()
            noise_sched = DDPMScheduler.from_config(SCHEDULER_CONFIG)
            alphas = noise_sched.alphas_cumprod.to(self.device)
            optimizer = self._optimizer()
            gen = torch.Generator().manual_seed(cfg.seed)
            step, history = (self._load_state(gen, optimizer) if resume else (0, []))
            scores_file = self.out / "validation" / "scores.json"
            if resume and scores_file.is_file():
                self._scores = {int(k): v for k, v in json.loads(scores_file.read_text("utf-8")).items()
                                if int(k) <= step}
            elif not resume:
                for old in ("checkpoints", "validation"):
                    for f in (self.out / old).glob("step-*"):
                        f.unlink()
            n = len(self.intake.crops)
            train_step = TrainStep(self.model.unet, self.latents, self._text, self.caption_index, alphas, optimizer,
                                   self.amp_dtype, self.device, make_scaler(self.amp_dtype, self.device))
            if self._graphed():
                try:
                    train_step.capture(cfg.batch_size, self.text_cache)
                except Exception as exc:  # noqa: BLE001 - any capture failure: run the same step eagerly
                    ev("phase", phase="train", note=f"CUDA graph capture failed, running eagerly: {exc}"[:300])
            ev("phase", phase="train", step=step, steps=cfg.steps, device=str(self.device),
               cuda_graph=train_step.graph is not None)
            loss_sum = torch.zeros((), device=self.device)
            window_start, window_steps = time.perf_counter(), 0
            last_tick = 0.0
            while step < cfg.steps:
                if cancel:
                    self._save_state(step, gen, optimizer, history)
                    ev("phase", phase="cancelled", step=step, steps=cfg.steps, resumable=True)
                    return {"cancelled": True, "step": step}
                idx = torch.randint(n, (cfg.batch_size,), generator=gen)
                flip = torch.randint(2, (cfg.batch_size,), generator=gen)
                t = torch.randint(0, noise_sched.config.num_train_timesteps, (cfg.batch_size,), generator=gen)
                noise = torch.randn((cfg.batch_size,) + tuple(self.latents.shape[2:]), generator=gen)
                loss_sum += train_step(idx, flip, t, noise)
                step += 1
                window_steps += 1
                if time.perf_counter() - last_tick >= TICK_S and step % cfg.log_every:  # progress between log steps
                    last_tick = time.perf_counter()
                    ev("tick", phase="train", step=step, steps=cfg.steps)
                if step % cfg.log_every == 0 or step == cfg.steps:
                    now = time.perf_counter()
                    rate = window_steps / max(now - window_start, 1e-9)
                    mean_loss = float(loss_sum) / window_steps  # the one sync, at log steps only
                    ev("step", phase="train", step=step, steps=cfg.steps, loss=round(mean_loss, 6),
                       it_per_s=round(rate, 3), eta_s=round((cfg.steps - step) / max(rate, 1e-9), 1))
                    history.append({"step": step, "loss": mean_loss})
                    loss_sum.zero_()
                    window_start, window_steps = now, 0
                if step % cfg.validate_every == 0 or step == cfg.steps:
                    self._checkpoint(step)
                if step % cfg.save_every == 0 and step < cfg.steps:
                    self._save_state(step, gen, optimizer, history)
            self._save_state(step, gen, optimizer, history)
            result = self._finish(history, started)
            ev("phase", phase="done", file=result["file"], step=step)
            return result
        finally:
            cancel.restore()

    # ------------------------------------------------------------------ validation and export

    def _checkpoint(self, step: int) -> None:
        from safetensors.torch import save_file

        folder = self.out / "checkpoints"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"step-{step:06d}.safetensors"
        tmp = path.with_suffix(".partial")
        save_file(L.kohya_state(self.layers), str(tmp))
        tmp.replace(path)
        if self.cfg.validation_images:
            self.events("phase", phase="validate", step=step)
            self._validate(step)

    def validation_prompts(self) -> list[str]:
        who = f"{self.intake.token} {self.intake.class_word}"
        base = [f"portrait photo of {who}, looking at the camera, soft studio light",
                f"close-up photo of {who}, natural light, neutral background",
                f"photo of {who}, smiling, head and shoulders",
                f"professional headshot of {who}, plain grey background"]
        return [base[i % len(base)] for i in range(self.cfg.validation_images)]

    def validation_conditioning(self, prompts: list[str], negative: str = VALIDATION_NEGATIVE):
        """``(cond, uncond)``, each ``(len(prompts), 77 * chunks, hidden)``: the validation portraits' text
        conditioning, made as the studio makes it on the diffusers host (emphasis, 75-token chunks, the run's
        CLIP skip, prompt and negative padded to the same chunk count)."""
        from lib_profile.hosts.diffusers.scheduled_embeds import ScheduledEmbeds

        m = self.model
        return ScheduledEmbeds(m.text_encoder, m.tokenizer, prompts, negative, self.cfg.clip_skip,
                               self.cfg.validation_steps).at(0)

    def _validate(self, step: int) -> None:
        import torch

        from lib_profile.hosts.diffusers import samplers

        m, cfg = self.model, self.cfg
        size = cfg.validation_size or cfg.resolution
        if not hasattr(self, "_pipe"):
            from diffusers import StableDiffusionPipeline

            sched = samplers.make_scheduler("DPM++ 2M Karras", None, m.scheduler_config)[0]
            self._pipe = StableDiffusionPipeline(vae=m.vae, text_encoder=m.text_encoder, tokenizer=m.tokenizer,
                                                 unet=m.unet, scheduler=sched, safety_checker=None,
                                                 feature_extractor=None, requires_safety_checker=False)
            self._pipe.set_progress_bar_config(disable=True)
            self._scorer = _Scorer(self.intake)
        folder = self.out / "validation"
        folder.mkdir(parents=True, exist_ok=True)
        scores = []
        m.unet.eval()
        prompts = self.validation_prompts()
        # one batched call per `batch_size` portraits; one at a time in the low-memory mode
        per_call = 1 if cfg.gradient_checkpointing else max(1, min(len(prompts), cfg.batch_size))
        with torch.no_grad(), torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.gpu):
            for start in range(0, len(prompts), per_call):
                ks = range(start, min(start + per_call, len(prompts)))
                cond, uncond = self.validation_conditioning([prompts[k] for k in ks])
                images = self._pipe(prompt_embeds=cond, negative_prompt_embeds=uncond,
                                    width=size, height=size, num_inference_steps=cfg.validation_steps,
                                    guidance_scale=6.5,
                                    generator=[torch.Generator().manual_seed(1000 + k) for k in ks]).images
                for k, image in zip(ks, images):
                    image.save(folder / f"step-{step:06d}-{k}.png")
                    scores.append(self._scorer(image))
        m.unet.train()
        found = [s for s in scores if s is not None]
        self._scores = getattr(self, "_scores", {})
        self._scores[step] = {"similarities": scores, "mean": float(np.mean(found)) if found else None,
                              "faces_found": len(found)}
        (folder / "scores.json").write_text(json.dumps(self._scores), "utf-8")
        self.events("validation", phase="validate", step=step, identity=self._scores[step]["mean"],
                    faces_found=len(found), images=len(scores))

    def _finish(self, history: list, started: float) -> dict[str, Any]:
        from safetensors.torch import load_file, save_file

        cfg, scores = self.cfg, getattr(self, "_scores", {})
        self.events("phase", phase="export")
        ckpts = {int(p.stem.split("-")[1]): p for p in sorted((self.out / "checkpoints").glob("step-*.safetensors"))}
        scored = sorted(((s["mean"], st) for st, s in scores.items() if s["mean"] is not None and st in ckpts),
                        reverse=True)
        if cfg.select == "last" or not scored:
            chosen = [max(ckpts)]
            why = ("the last checkpoint, as asked" if cfg.select == "last" else
                   "the last checkpoint: no validation image had a detectable face to score")
        elif cfg.select == "best":
            chosen = [scored[0][1]]
            why = f"the best checkpoint by identity similarity ({scored[0][0]:.3f})"
        else:
            k = int(cfg.select[3:])
            chosen = [st for _, st in scored[:k]]
            why = f"the average of the {len(chosen)} best checkpoints by identity similarity"
        state = L.average([load_file(str(ckpts[s])) for s in chosen])
        rank, alpha = L.network_dims(state)  # the metadata states what the tensors hold (an average has alpha = rank)
        run_id = time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)
        stem = f"{cfg.name}-{run_id}"
        best_score = max((scores[s]["mean"] for s in chosen if scores.get(s, {}).get("mean") is not None), default=None)
        identity = None
        if self.intake.reference is not None:
            identity = {"embedder": self.intake.embedder, "vector": [round(float(v), 6) for v in self.intake.reference]}
        meta = {
            "ss_output_name": stem,
            "ss_base_model_version": "sd_v1",
            "ss_network_module": "networks.lora",
            "ss_network_dim": str(rank),
            "ss_network_alpha": str(round(alpha, 6)),
            "ss_learning_rate": str(cfg.learning_rate),
            "ss_max_train_steps": str(cfg.steps),
            "ss_train_batch_size": str(cfg.batch_size),
            "ss_resolution": f"({cfg.resolution}, {cfg.resolution})",
            "ss_num_train_images": str(len(self.intake.crops)),
            "ss_clip_skip": str(cfg.clip_skip),
            "ss_seed": str(cfg.seed),
            "ss_sd_model_name": self.model_path.name,
            "ss_training_started_at": str(started),
            "ss_training_finished_at": str(time.time()),
            "ss_tag_frequency": {"train": {c: self.intake.captions.count(c) for c in set(self.intake.captions)}},
            "ss_training_comment": f"Profile Studio {__version__} face LoRA; activation text: "
                                   f"{self.intake.token} {self.intake.class_word}",
            "profile_studio_activation_text": f"{self.intake.token} {self.intake.class_word}",
            "profile_studio_identity_score": "" if best_score is None else f"{best_score:.4f}",
            "profile_studio_chosen_steps": chosen,
        }
        if identity is not None and cfg.identity_in_lora:  # a biometric of the person: off on request
            meta["profile_studio_identity"] = identity
        path = self.out / f"{stem}.safetensors"
        tmp = path.with_suffix(".partial")
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp), metadata=L.metadata_strings(meta))
        tmp.replace(path)
        if identity is not None:
            (self.out / f"{stem}.identity.json").write_text(json.dumps(identity), "utf-8")
        sheet = self._contact_sheet(chosen)
        report = {
            "profile_studio": __version__,
            "name": cfg.name, "file": path.name, "checkpoint_model": self.model_path.name,
            "config": asdict(cfg), "device": str(self.device),
            "checkpoints": [{"step": st, "loss": _loss_near(history, st),
                             "identity_similarity": scores.get(st, {}).get("mean"),
                             "faces_found": scores.get(st, {}).get("faces_found", 0),
                             "file": f"checkpoints/{ckpts[st].name}"} for st in sorted(ckpts)],
            "choice": {"mode": cfg.select, "steps": chosen, "why": why, "identity_similarity": best_score},
            "loss_history": history,
            "contact_sheet": sheet,
            "seconds": round(time.time() - started, 1),
        }
        (self.out / "train_report.json").write_text(json.dumps(report, indent=1), "utf-8")
        return {"file": str(path), "report": report}

    def _contact_sheet(self, chosen: list[int]) -> Optional[str]:
        from lib_profile.photos.contact_sheet import contact_sheet

        entries = []
        for st, s in sorted(getattr(self, "_scores", {}).items()):
            for k, sim in enumerate(s["similarities"]):
                path = self.out / "validation" / f"step-{st:06d}-{k}.png"
                entries.append({"image": Image.open(path).convert("RGB") if path.is_file() else None,
                                "title": f"step {st} #{k}", "accepted": st in chosen,
                                "lines": [f"identity {sim:.3f}" if sim is not None else "no face found"]})
        if not entries:
            return None
        contact_sheet(entries, columns=max(1, self.cfg.validation_images)).save(self.out / "validation_sheet.png")
        return "validation_sheet.png"


def _loss_near(history: list, step: int) -> Optional[float]:
    before = [h["loss"] for h in history if h["step"] <= step]
    return round(before[-1], 6) if before else None


def _Scorer(intake: IntakeData):
    """Identity similarity of a validation image to the person (None when no face is found)."""
    from lib_profile.identity.score import IdentityScorer

    ref = None if intake.reference is None else {"embedder": intake.embedder, "vector": intake.reference}
    return IdentityScorer(ref)
