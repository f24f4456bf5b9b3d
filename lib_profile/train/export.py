"""Exporting the chosen checkpoint (or the average of the best) as a kohya LoRA with its report
(a part of :class:`~lib_profile.train.trainer.Trainer`, which gives ``cfg``, ``intake``, ``out``, ``events``)."""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import asdict
from typing import Any, Optional


from lib_profile import __version__
from lib_profile.train import lora


class Export:
    """The LoRA file, its metadata and ``train_report.json``."""

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
        state = lora.average([load_file(str(ckpts[s])) for s in chosen])
        rank, alpha = lora.network_dims(state)  # the metadata states what the tensors hold (an average has alpha = rank)
        run_id = time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)
        stem = f"{cfg.name}-{run_id}"
        best_score = max((scores[s]["mean"] for s in chosen if scores.get(s, {}).get("mean") is not None), default=None)
        identity = None
        if self.intake.reference is not None:
            identity = {"embedder": self.intake.embedder, "vector": [round(float(v), 6) for v in self.intake.reference]}
        meta = {
            "ss_output_name": stem,
            **self.conditioning.metadata(cfg.resolution),  # ss_base_model_version, modelspec.* of the family
            "modelspec.title": stem,
            "ss_network_module": "networks.lora",
            "ss_network_dim": str(rank),
            "ss_network_alpha": str(round(alpha, 6)),
            "ss_learning_rate": str(cfg.learning_rate),
            "ss_max_train_steps": str(cfg.steps),
            "ss_train_batch_size": str(cfg.batch_size),
            "ss_resolution": f"({cfg.resolution}, {cfg.resolution})",
            "ss_num_train_images": str(len(self.intake.crops)),
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
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp), metadata=lora.metadata_strings(meta))
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


def _loss_near(history: list, step: int) -> Optional[float]:
    before = [h["loss"] for h in history if h["step"] <= step]
    return round(before[-1], 6) if before else None
