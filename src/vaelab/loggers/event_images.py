"""The images a run drew into its TensorBoard events, read back: the latest drawing of each image tag as PNG bytes.

The dashboard views (:mod:`vaelab.callbacks`) draw into TensorBoard only; a tracker that keeps files (MLflow's
artifacts, :mod:`vaelab.loggers.mlflow`) takes the last picture of each view from the events once the run is over,
so the views keep one way out.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class EventImage:
    """One image summary: its tag (``val/reconstructions``), the step it was drawn at, and its encoded bytes (PNG,
    as ``SummaryWriter.add_image`` writes them)."""

    tag: str
    step: int
    png: bytes

    @property
    def file_name(self) -> str:
        """The tag as a relative file path: ``val/reconstructions`` → ``val/reconstructions.png`` (characters a file
        system refuses become ``-``)."""
        parts = ["".join(c if c.isalnum() or c in "._-" else "-" for c in part) for part in self.tag.split("/")]
        return "/".join(p.strip(".") or "-" for p in parts) + ".png"


def latest_images(folder: Path | str, prefixes: tuple[str, ...] = ("val/",)) -> list[EventImage]:
    """The latest image of every image tag starting with one of ``prefixes`` (all tags for ``()``) in the
    TensorBoard event files directly inside ``folder``, sorted by tag; ``[]`` when there are none.

    The latest is the one TensorBoard shows last: every event file of the folder is read in order (a run resumed in
    its folder has several), and, as TensorBoard reads them, a step lower than one before it is a restart from
    there, whose drawing replaces the later ones. One image per tag is kept in memory."""
    folder = Path(folder)
    if not folder.is_dir() or not any(folder.glob("events.out.tfevents.*")):
        return []
    from tensorboard.backend.event_processing import event_accumulator as ea

    # a reservoir of one per tag keeps the last image it saw (TensorBoard's reservoirs always keep the newest)
    guidance = {ea.IMAGES: 1, ea.SCALARS: 1, ea.HISTOGRAMS: 1, ea.TENSORS: 1, ea.COMPRESSED_HISTOGRAMS: 1,
                ea.AUDIO: 1}
    accumulator = ea.EventAccumulator(str(folder), size_guidance=guidance)
    quiet = logging.getLogger("tensorboard")  # (it logs each event file it moves on to)
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        accumulator.Reload()
    finally:
        quiet.setLevel(level)
    out = []
    for tag in sorted(accumulator.Tags().get(ea.IMAGES, [])):
        if prefixes and not tag.startswith(prefixes):
            continue
        events = accumulator.Images(tag)
        if events:
            last = events[-1]
            out.append(EventImage(tag, int(last.step), bytes(last.encoded_image_string)))
    return out
