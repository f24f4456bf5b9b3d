"""What every section of the tab shares: the studio, the Person list (labels -> slugs), the portraits picked, and
errors shown in the status box. gradio is imported only inside methods."""

from typing import Any, Callable, Optional

from lib_profile.hosts.base import HostError
from lib_profile.ui.display import person_labels, portrait_labels

CSS_ID = "profile_studio"


class TabContext:
    """``studio()`` returns the service (made on first use); None: a tab without one (nothing to list)."""

    def __init__(self, studio: Optional[Callable[[], Any]]):
        self.studio = studio
        self.outputs_count: dict[str, int] = {}  # handler name -> how many outputs it fills (for its error)

    def labels(self) -> dict[str, str]:
        return person_labels(self.studio().store.list()) if self.studio else {}

    def to_slug(self, label: Optional[str]) -> Optional[str]:
        """The slug of the person picked (a label of the list; a slug is taken as it is)."""
        if not label:
            return None
        return self.labels().get(label, label)

    def choices_update(self, slug=None):
        import gradio as gr

        names = self.labels()
        value = next((lab for lab, s in names.items() if s == slug), None) or (next(iter(names)) if names else None)
        return gr.update(choices=list(names), value=value)

    def to_portrait(self, slug, choice):
        """``"job/file"`` of the portrait picked (a label of the list; ``"job/file"`` is taken as it is)."""
        if not slug or not choice:
            return choice
        return portrait_labels(self.studio().outputs(slug)).get(choice, choice)

    def safe(self, fn):
        """Errors become a message in the status box instead of a red gradio error."""
        def wrapper(*args):
            try:
                return fn(*args)
            except HostError as exc:
                return self.error_outputs(fn, f"⚠️ {exc}")
        wrapper.__name__ = fn.__name__
        return wrapper

    def error_outputs(self, fn, message):
        import gradio as gr

        n = self.outputs_count[fn.__name__]
        return tuple([message] + [gr.update()] * (n - 1)) if n > 1 else message
