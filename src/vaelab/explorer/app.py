"""The explorer's page (Gradio Blocks) over :mod:`vaelab.explorer.views`, and the command ``vaelab-explore``.

    vaelab-explore ckpt_path=logs/train/runs/<run>/checkpoints/last.ckpt [port=7861] [server_name=127.0.0.1]

Why Gradio: a well-kept library made for exactly this (a model's inputs and outputs in a browser), with sliders,
images and uploads built in, served by its own server: no front-end code to write or keep. It is imported here
only (``pip install 'vaelab[explore]'``), so nothing else of vaelab needs it.

The page is served on 127.0.0.1, this machine only, unless ``server_name`` names another interface; ``share`` (a
public link through Gradio's relay) is off unless ``share=true``. A bad upload (not an image, another size or colour
mode) is one message in the page saying what the model takes, never a traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence
from functools import wraps
from typing import Any

import numpy as np
from omegaconf import DictConfig

from vaelab.errors import VaelabError
from vaelab.explorer import views
from vaelab.explorer.config import parse
from vaelab.explorer.source import Source, load_source

log = logging.getLogger(__name__)

#: how many images the slider ranges of an AE are measured on (the first test images)
SPREAD_IMAGES = 256
#: system fonts only: the page loads nothing from outside the machine (Gradio's default theme fetches Google Fonts)
FONTS = ("ui-sans-serif", "system-ui", "sans-serif")
MONO_FONTS = ("ui-monospace", "monospace")
CSS = ".vaelab-image img { image-rendering: pixelated; }"


def shown(handler: Callable[..., Any]) -> Callable[..., Any]:
    """``handler`` with a problem the user can fix (a bad upload, a sampler that cannot be fitted) shown as one
    message in the page (``gr.Error``) instead of Gradio's generic "Error"."""
    import gradio as gr

    @wraps(handler)
    def wrapped(*args: Any) -> Any:
        try:
            return handler(*args)
        except (views.UploadError, VaelabError) as err:
            raise gr.Error(str(err), print_exception=False) from None

    return wrapped


# ------------------------------------------------------------------------------------------ what the page says
def describe(source: Source) -> str:
    """The page's header: the model, and where its images come from."""
    model = source.model
    shape = "×".join(map(str, model.image_shape))
    head = (f"## vaelab explorer\n**{type(model.code).__name__}** code of {model.latent_dim} dimensions · images "
            f"{shape} · {model.likelihood.name} likelihood")
    if source.has_data:
        name = type(source.datamodule).__name__
        return f"{head} · data: {name}, {source.num_test_images} test images (pick one by its index)"
    return (f"{head}\n\n**No data set: uploads only.** {source.no_data[0].upper()}{source.no_data[1:]}, so pick "
            f"images by uploading them: {views.expected(model.image_shape)}.")


def initial_image(source: Source) -> np.ndarray | None:
    """The image the page opens with: test image 0, or none without data."""
    return source.test_image(0).permute(1, 2, 0).cpu().numpy() if source.has_data else None


def spread_of(source: Source) -> np.ndarray:
    """Each code dimension's slider unit (:func:`views.code_spread`), over the first test images when there are."""
    images = None
    if source.has_data:
        batch, _ = source.datamodule.fixed_batch("test", SPREAD_IMAGES)
        images = views.to_numpy(batch)
    return views.code_spread(source.model, images)


def picked(source: Source, index: float | None, upload: str | None) -> np.ndarray:
    """The image a picker chose: the upload when there is one, else test image ``index``."""
    if upload is not None or not source.has_data:
        return views.read_upload(upload, source.model.image_shape)
    return source.test_image(int(index or 0)).permute(1, 2, 0).cpu().numpy()


def slider_settings(value: float, lo: float, hi: float) -> dict[str, float]:
    """A latent slider's value, range and step (1/200 of the range), to 3 decimals as the page shows them."""
    return {"value": round(float(value), 3), "minimum": round(lo, 3), "maximum": round(hi, 3),
            "step": round((hi - lo) / 200, 4)}


def image_box(label: str, **kwargs: Any) -> Any:
    import gradio as gr

    return gr.Image(label=label, format="png", interactive=False, elem_classes=["vaelab-image"], **kwargs)


def picker(source: Source, label: str, index: int = 0) -> tuple[Any, Any]:
    """A test-image index slider (hidden without data) and an upload that replaces it."""
    import gradio as gr

    last = max(source.num_test_images - 1, 1)  # (a slider needs a range, also when it is hidden)
    chosen = gr.Slider(0, last, value=min(index, last), step=1, label=f"{label}: test image",
                       visible=source.has_data)
    upload = gr.File(label=f"{label}: upload an image" + (" (replaces the test image)" if source.has_data else ""),
                     type="filepath", height=120)
    return chosen, upload


# ------------------------------------------------------------------------------------------ the tabs
def sliders_tab(source: Source, cfg: DictConfig) -> None:
    """A slider per latent dimension (the first ``max_sliders``) over the code of a picked image, the image decoded
    from them, and the walk along one dimension from there. (No session state: the code is the picked image's,
    read again with the sliders' values, so the page keeps no connection open.)"""
    import gradio as gr

    model = source.model
    if not views.traversable(model):
        gr.Markdown(f"A {type(model.code).__name__} is a grid of codebook vectors, not a vector of dimensions: there "
                    "is nothing to put a slider on. Interpolate, sample or reconstruct instead.")
        return
    spread, span = spread_of(source), float(cfg.span)
    count = min(model.latent_dim, int(cfg.max_sliders))

    def code_from(index_value: float | None, upload_value: str | None) -> tuple[np.ndarray | None, np.ndarray]:
        """The picked image (None: nothing uploaded, no data) and its code (zeros for none)."""
        if upload_value is None and not source.has_data:
            return None, np.zeros(model.latent_dim)
        image = picked(source, index_value, upload_value)
        return image, views.code_of(model, image)

    def walk_along(code: np.ndarray, which: float) -> np.ndarray:
        d = int(which)
        lo, hi = views.slider_ranges(code[d : d + 1], spread[d : d + 1], span)[0]
        codes = views.traversal_codes(code, d, np.linspace(lo, hi, int(cfg.steps)))
        return views.display(views.decode(model, codes), min_side=80)

    def pick(index_value: float | None, upload_value: str | None, which: float) -> list[Any]:
        image, code = code_from(index_value, upload_value)
        bounds = views.slider_ranges(code, spread, span)
        updates = [gr.update(**slider_settings(code[d], *bounds[d])) for d in range(count)]
        shown_image = gr.skip() if image is None else views.display(image)
        return [shown_image, views.display(views.decode(model, code)[0]), walk_along(code, which), *updates]

    def move(index_value: float | None, upload_value: str | None, which: float, *values: float) -> list[Any]:
        code = views.with_values(code_from(index_value, upload_value)[1], dict(enumerate(values)))
        return [views.display(views.decode(model, code)[0]), walk_along(code, which)]

    first, code = code_from(0, None)
    ranges = views.slider_ranges(code, spread, span)
    unit = "the prior's standard deviation" if views.unit_scale(model) else "each dimension's spread over the data"
    gr.Markdown(f"Each slider moves one dimension of the picked image's code, ± {span:g} × {unit}."
                + (f" The first {count} of {model.latent_dim} dimensions have sliders; the others keep the image's "
                   "code." if count < model.latent_dim else ""))
    with gr.Row():
        index, upload = picker(source, "Image")
    with gr.Row():
        original = image_box("Image", value=None if first is None else views.display(first))
        decoded = image_box("Decoded from the sliders", value=views.display(views.decode(model, code)[0]))
    sliders = []
    with gr.Accordion(f"Latent dimensions ({count})", open=True), gr.Row():
        for d in range(count):
            sliders.append(gr.Slider(**slider_settings(code[d], *ranges[d]), label=f"z{d}", min_width=200,
                                     elem_classes=["vaelab-latent"]))
    dim = gr.Slider(0, max(model.latent_dim - 1, 1), value=0, step=1, label="Walk one dimension")
    walk = image_box(f"The walk along it from the sliders' code, {cfg.steps} steps over its slider's range",
                     value=walk_along(code, 0))

    picking = [index, upload, dim]
    index.change(shown(pick), picking, [original, decoded, walk, *sliders], api_name="pick")
    upload.change(shown(pick), picking, [original, decoded, walk, *sliders], api_visibility="private")
    for changed in (*sliders, dim):
        event = changed.release if changed is not dim else changed.change
        event(shown(move), [*picking, *sliders], [decoded, walk], api_visibility="private", show_progress="hidden")


def interpolation_tab(source: Source, cfg: DictConfig, tab: Any) -> None:
    """The images decoded along the line between the codes of two picked images: drawn when the tab opens, again
    when a choice changes."""
    import gradio as gr

    with gr.Row():
        with gr.Column():
            a_index, a_upload = picker(source, "A", 0)
        with gr.Column():
            b_index, b_upload = picker(source, "B", 1)
    steps = gr.Slider(2, 16, value=int(cfg.steps), step=1, label="Images (A's reconstruction … B's)")
    strip = image_box("(1 − α)·code(A) + α·code(B), α from 0 to 1, decoded")

    def run(a: float | None, a_file: str | None, b: float | None, b_file: str | None, n: float) -> Any:
        if not source.has_data and (a_file is None or b_file is None):
            return gr.skip()  # (uploads only: nothing to show until both are there)
        images = views.interpolate(source.model, picked(source, a, a_file), picked(source, b, b_file), int(n))
        return views.display(images, min_side=96)

    inputs = [a_index, a_upload, b_index, b_upload, steps]
    tab.select(shown(run), inputs, strip, api_name="interpolate")
    for changed in inputs:
        changed.change(shown(run), inputs, strip, api_visibility="private", show_progress="hidden")


def sampling_tab(source: Source, cfg: DictConfig, tab: Any) -> None:
    """Images drawn from the prior or from the mixture fitted on the training codes (and, for a conditional model,
    of a chosen class): when the tab opens, and at each click of Draw."""
    import gradio as gr

    model = source.model
    choices = views.sampler_choices(model, source.has_data)
    if not choices:
        gr.Markdown(f"A {type(model.code).__name__} has no prior to sample from, and without the training images no "
                    "Gaussian mixture can be fitted on its codes: nothing to sample.")
        return
    fit = cfg.gmm.fit_images
    gr.Markdown("**prior**: z ~ the code's prior. **gmm**: z ~ a Gaussian mixture of "
                f"{cfg.gmm.n_components} components fitted (at its first use) on the codes of the first {fit} "
                "training images, as the samples view does (Ghosh et al. 2020).")
    classes = views.class_choices(model, source.class_names())
    with gr.Row():
        sampler = gr.Radio(choices, value=choices[0], label="Sample from")
        label = gr.Dropdown(classes, value=classes[0] if classes else None, label="Class", visible=bool(classes))
        seed = gr.Number(0, precision=0, label="Seed")
    button = gr.Button("Draw", variant="primary")
    grid = image_box(f"{cfg.num_samples} samples")

    def run(which: str, chosen: str | None, seed_value: float | None) -> np.ndarray:
        drawn = source.gmm() if which == "gmm" else None
        index = classes.index(chosen) if classes and chosen in classes else None
        images = views.sample(model, int(cfg.num_samples), int(seed_value or 0), drawn, index)
        return views.display(images, nrow=views.grid_rows(len(images)), min_side=64)

    button.click(shown(run), [sampler, label, seed], grid, api_name="sample")
    tab.select(shown(run), [sampler, label, seed], grid, api_visibility="private")


def reconstruction_tab(source: Source) -> None:
    """An uploaded image and its reconstruction."""
    import gradio as gr

    gr.Markdown(f"Upload {views.expected(source.model.image_shape)}.")
    upload = gr.File(label="Upload an image", type="filepath", height=120)
    with gr.Row():
        original = image_box("Uploaded")
        rebuilt = image_box("Reconstruction (decoded from its code)")

    def run(path: str | None) -> tuple[np.ndarray, np.ndarray]:
        image = views.read_upload(path, source.model.image_shape)
        return views.display(image), views.display(views.reconstruct(source.model, image))

    upload.upload(shown(run), upload, [original, rebuilt], api_name="reconstruct")


def build(source: Source, cfg: DictConfig) -> Any:
    """The page: a header saying what is explored, then one tab per view."""
    import gradio as gr

    with gr.Blocks(title="vaelab explorer", analytics_enabled=False) as demo:
        gr.Markdown(describe(source))
        with gr.Tab("Latent sliders"):
            sliders_tab(source, cfg)
        with gr.Tab("Interpolation") as tab:
            interpolation_tab(source, cfg, tab)
        with gr.Tab("Samples") as tab:
            sampling_tab(source, cfg, tab)
        with gr.Tab("Reconstruct an upload"):
            reconstruction_tab(source)
    return demo


def launch(demo: Any, cfg: DictConfig, block: bool = True) -> Any:
    """Serve ``demo`` on ``cfg.server_name`` (127.0.0.1 unless asked), port ``cfg.port``, without a public link
    unless ``cfg.share``; no server-side rendering, no MCP server, no analytics. Blocks until Ctrl-C when ``block``."""
    import gradio as gr

    theme = gr.themes.Default(font=list(FONTS), font_mono=list(MONO_FONTS))
    return demo.launch(server_name=str(cfg.server_name), server_port=cfg.port, share=bool(cfg.share),
                       prevent_thread_lock=not block, ssr_mode=False, mcp_server=False, enable_monitoring=False,
                       theme=theme, css=CSS, quiet=not block)


def main(argv: Sequence[str] | None = None) -> None:
    """``vaelab-explore ckpt_path=… [key=value …]``: serve the explorer (see :mod:`vaelab.explorer.config`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if {"-h", "--help"} & set(argv):
        from vaelab.explorer import config

        print(__doc__.split("\n\n")[1].strip(), "\nSettings (key=value):", ", ".join(config.DEFAULTS), sep="\n")
        return
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        cfg = parse(argv)
        source = load_source(cfg)
        demo = build(source, cfg)
        launch(demo, cfg)
    except VaelabError as err:
        print(f"Error: {err}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("Interrupted (Ctrl-C).", file=sys.stderr)
        sys.exit(1)
