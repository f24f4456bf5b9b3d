"""The studio as a service (:class:`~lib_profile.service.studio.Studio`): identities, photos, training and
generation jobs on one host, for the API routes, the tab, the CLI and the one-call flow."""

from lib_profile.service.studio import Studio
from lib_profile.service.training import EARLIER_TRAINER, TRAIN_CANCELLED, TRAIN_OPTIONS

__all__ = ["EARLIER_TRAINER", "TRAIN_CANCELLED", "TRAIN_OPTIONS", "Studio"]
