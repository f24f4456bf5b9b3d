"""The validation contact sheet: every validation portrait with its identity score
(a part of :class:`~lib_profile.train.trainer.Trainer`, which gives ``cfg``, ``intake``, ``out``, ``events``)."""

from __future__ import annotations

from typing import Optional

from PIL import Image


class ValidationSheet:
    """``validation_sheet.png`` of a run."""

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
