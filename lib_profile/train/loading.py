"""Which model the face trainer trains and how: a checkpoint file read by its family, or loaded components, and
the family's conditioning object (:mod:`.conditioning`, :mod:`.sdxl`)."""

from __future__ import annotations

from pathlib import Path

from lib_profile import families
from lib_profile.hosts.base import HostError
from lib_profile.safetensors_header import checkpoint_file_family
from lib_profile.train.conditioning import SD15Conditioning
from lib_profile.train.sdxl import SDXLConditioning, is_sdxl, load_sdxl_checkpoint


def load_model(checkpoint, data_dir):
    """The model to train: ``checkpoint`` as loaded components (an :class:`~lib_profile.hosts.diffusers.
    checkpoint.SD15` or :class:`~lib_profile.train.sdxl.SDXLModel`, kept as given), or a checkpoint name/file, read
    by its family (:func:`lib_profile.families.checkpoint_family` on a ``.safetensors`` file's tensor names).

    HostError at once, with the family message, for a file of a family the trainer cannot load."""
    from lib_profile import paths
    from lib_profile.hosts.diffusers.checkpoint import load_sd15
    from lib_profile.hosts.diffusers.host import resolve_checkpoint

    if not isinstance(checkpoint, (str, Path)):
        return checkpoint
    path = resolve_checkpoint(checkpoint, data_dir)
    found = checkpoint_file_family(path)
    if found == families.SDXL.name:
        return load_sdxl_checkpoint(path, data_dir)
    if found not in (None, families.SD15.name):
        raise HostError(families.unsupported_checkpoint_message(found, "Training"))
    return load_sd15(path, paths.tokenizer_dir(data_dir))


def for_model(model, cfg, device):
    """The conditioning object of the loaded ``model``'s family."""
    return (SDXLConditioning if is_sdxl(model) else SD15Conditioning)(model, cfg, device)
