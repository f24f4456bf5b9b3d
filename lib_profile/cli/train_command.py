"""``train``: the face LoRA trainer in its own process (exit 3: cancelled, resumable; the run lock's code: another
trainer writes to the run)."""

from __future__ import annotations

import sys
from pathlib import Path


def add_train_parser(sub) -> None:
    p = sub.add_parser("train", help="train the person's face LoRA from an intake folder (own process)")
    p.add_argument("intake", help="the folder `intake` wrote (report.json, train/, identity.json)")
    p.add_argument("--checkpoint", required=True, help="the SD1.5 or SDXL checkpoint file to train on, or 'tiny'")
    p.add_argument("--name", required=True, help="the LoRA's name (a new file name is made for every run)")
    p.add_argument("--out", required=True, help="training folder: checkpoints, validation, state, report, LoRA")
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--resume", action="store_true", help="continue a cancelled run in --out")
    p.add_argument("--rank", type=int, default=32)
    p.add_argument("--alpha", type=float, default=32.0)
    p.add_argument("--learning-rate", type=float, default=1e-4)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--resolution", type=int, default=None,
                   help="training size in pixels (default: the checkpoint family's, SD1.5 512, SDXL 1024; 768 suits "
                        "small cards)")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--clip-skip", type=int, default=2)
    p.add_argument("--feed-forward", action="store_true", help="also train the UNet's feed-forward layers")
    p.add_argument("--train-text-encoder", action="store_true", help="also train the text encoder's attention")
    p.add_argument("--no-identity-in-lora", dest="identity_in_lora", action="store_false",
                   help="leave the person's face embedding out of the LoRA file's metadata (it stays in the "
                        ".identity.json beside it, for identity scores)")
    p.add_argument("--gradient-checkpointing", action="store_true", default=None,
                   help="trade speed for memory (default: on when the GPU has little free memory: under 12 GB "
                        "for SD1.5, 24 GB for SDXL)")
    p.add_argument("--low-memory", action="store_true",
                   help="the 12 GB mode (SDXL on a 12 GB card): gradient checkpointing, 8-bit AdamW when bitsandbytes "
                        "is installed, frozen text encoders on the CPU, validation one image at a time in VAE tiles")
    p.add_argument("--optimizer", default="adamw", choices=["adamw", "adamw8bit"])
    p.add_argument("--no-cuda-graph", dest="cuda_graph", action="store_false",
                   help="run each GPU step eagerly instead of replaying it as one CUDA graph (slower; for debugging)")
    p.add_argument("--validate-every", type=int, default=100)
    p.add_argument("--validation-images", type=int, default=4)
    p.add_argument("--validation-steps", type=int, default=20)
    p.add_argument("--validation-size", type=int, default=None)
    p.add_argument("--select", default="top3", help="best, last or topK (average of the K best checkpoints)")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--save-every", type=int, default=50)
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--events", help="append JSON-lines progress events to this file (default: stdout)")
    p.add_argument("--cancel-file", help="stop (resumably) when this file appears (default: OUT/CANCEL)")
    p.add_argument("--parent-pid", type=int, default=None,
                   help="stop (resumably) when this process, the one that started the trainer, dies")


def lora_name(name: str) -> str:
    """``--name`` as a LoRA file name: an ASCII name as given (the trainer checks it); a name in another script
    (``李雷``, ``Анна``) as its slug (``li-lei-3a47328a``, see :func:`~lib_profile.store.identities.slug_for`),
    said on stderr. A name with ``/``, ``..`` or control characters is a HostError (exit 2)."""
    if name.isascii():
        return name
    from lib_profile.store.identities import slug_for

    slug = slug_for(name)
    print(f"LoRA name: {slug} (from {name!r})", file=sys.stderr)
    return slug


def cmd_train(args) -> int:
    from lib_profile.train.parent import watch_parent

    watch_parent(args.parent_pid)  # first, before the slow imports: a trainer never outlives its starter
    from lib_profile.train.runlock import LOCKED, RunLocked
    from lib_profile.train.trainer import CANCELLED, Events, TrainConfig, Trainer

    cfg = TrainConfig(name=lora_name(args.name), steps=args.steps, rank=args.rank, alpha=args.alpha,
                      learning_rate=args.learning_rate, batch_size=args.batch_size, resolution=args.resolution,
                      seed=args.seed, clip_skip=args.clip_skip, feed_forward=args.feed_forward,
                      train_text_encoder=args.train_text_encoder, gradient_checkpointing=args.gradient_checkpointing,
                      optimizer=args.optimizer, cuda_graph=args.cuda_graph, validate_every=args.validate_every,
                      validation_images=args.validation_images, validation_steps=args.validation_steps,
                      validation_size=args.validation_size, select=args.select, log_every=args.log_every,
                      save_every=args.save_every, device=args.device, identity_in_lora=args.identity_in_lora,
                      low_memory=args.low_memory)
    events = Events(args.events or sys.stdout)
    try:
        trainer = Trainer(args.intake, args.checkpoint, args.out, cfg, events, args.data_dir)
        result = trainer.run(resume=args.resume, cancel_file=Path(args.cancel_file) if args.cancel_file else None)
    except RunLocked as exc:  # the events file is the other trainer's: nothing is written to it
        print(f"error: {exc}", file=sys.stderr)
        return LOCKED
    except Exception as exc:
        events("phase", phase="error", message=str(exc))
        raise
    finally:
        events.close()
    if result.get("cancelled"):
        print(f"cancelled at step {result['step']}; continue with --resume", file=sys.stderr)
        return CANCELLED
    print(result["file"], file=sys.stderr)
    return 0
