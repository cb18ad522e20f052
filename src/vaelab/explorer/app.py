"""The explorer's page (Gradio Blocks) over :mod:`vaelab.explorer.views`, and the command ``vaelab-explore``.

    vaelab-explore ckpt_path=logs/train/runs/<run>/checkpoints/last.ckpt [port=7861] [server_name=127.0.0.1]

Why Gradio: a well-kept library made for exactly this (a model's inputs and outputs in a browser), with sliders,
images and uploads built in, served by its own server: no front-end code to write or keep. It is imported here
only (``pip install 'vaelab[explore]'``), so nothing else of vaelab needs it.

The page is served on 127.0.0.1, this machine only, unless ``server_name`` names another interface; ``share`` (a
public link through Gradio's relay) is off unless ``share=true``. A bad upload (not an image, another size or colour
mode) is one message in the page saying what the model takes, never a traceback.

A conditional model (the conditional VAE) encodes and decodes given a class, so beside each picked image the page
offers its class (a test image's own, which the choice follows as another is picked; the chosen one for an upload)
and, where an image is decoded, the class to decode it as. For every other model these choices are hidden and the
page is as it always was.
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
    if model.conditional:
        head += f" · conditional on {model.num_classes} classes (choose them beside the images)"
    if source.has_data:
        name = type(source.datamodule).__name__
        return f"{head} · data: {name}, {source.num_test_images} test images (pick one by its index)"
    return (f"{head}\n\n**No data set: uploads only.** {source.no_data[0].upper()}{source.no_data[1:]}, so pick "
            f"images by uploading them: {views.expected(model.image_shape)}.")


def initial_image(source: Source) -> np.ndarray | None:
    """The image the page opens with: test image 0, or none without data."""
    return source.test_image(0).permute(1, 2, 0).cpu().numpy() if source.has_data else None


def spread_of(source: Source) -> np.ndarray:
    """Each code dimension's slider unit (:func:`views.code_spread`), over the first test images when there are (a
    conditional model's codes read as the images' own classes)."""
    images = labels = None
    if source.has_data:
        batch, labels = source.datamodule.fixed_batch("test", SPREAD_IMAGES)
        images, labels = views.to_numpy(batch), source.datamodule.class_labels(labels).cpu().numpy()
    return views.code_spread(source.model, images, labels)


# ------------------------------------------------------------------------------------------ a conditional model's class
def classes_of(source: Source) -> list[str]:
    """The page's class choices: a conditional model's classes, named by the data where they fit; none (the choices
    hidden) for any other model."""
    return views.class_choices(source.model, source.class_names())


def class_index(classes: list[str], chosen: str | None) -> int | None:
    """The class index of the choice ``chosen`` (None: no classes, or nothing chosen)."""
    return classes.index(chosen) if classes and chosen in classes else None


def own_class(source: Source, classes: list[str], index: float | None, upload: str | None) -> str | None:
    """The choice naming the picked test image's own class, which a class choice follows when a test image is picked;
    None for an upload (its class is the one chosen), without data, or without classes."""
    if not classes or upload is not None or not source.has_data:
        return None
    return classes[source.test_label(int(index or 0))]


def followed(choice: str | None) -> Any:
    """A class choice set to ``choice``, or left as it is (None)."""
    import gradio as gr

    return gr.skip() if choice is None else gr.update(value=choice)


def class_box(classes: list[str], label: str, value: str | None) -> Any:
    """A class choice, hidden without classes."""
    import gradio as gr

    return gr.Dropdown(classes, value=value if classes else None, label=label, visible=bool(classes))


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


def picker(source: Source, label: str, index: int = 0) -> tuple[Any, Any, Any]:
    """A test-image index slider (hidden without data), an upload that replaces it, and the image's class (hidden
    without classes): the test image's own at first, else the first class."""
    import gradio as gr

    last = max(source.num_test_images - 1, 1)  # (a slider needs a range, also when it is hidden)
    index = min(index, last)
    chosen = gr.Slider(0, last, value=index, step=1, label=f"{label}: test image", visible=source.has_data)
    upload = gr.File(label=f"{label}: upload an image" + (" (replaces the test image)" if source.has_data else ""),
                     type="filepath", height=120)
    classes = classes_of(source)
    first = own_class(source, classes, min(index, source.num_test_images - 1), None)  # (None without data)
    klass = class_box(classes, f"{label}: its class", first or (classes[0] if classes else None))
    return chosen, upload, klass


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
    classes = classes_of(source)

    def code_from(index_value: float | None, upload_value: str | None,
                  image_class: str | None) -> tuple[np.ndarray | None, np.ndarray]:
        """The picked image (None: nothing uploaded, no data) and its code (zeros for none), read as its class."""
        if upload_value is None and not source.has_data:
            return None, np.zeros(model.latent_dim)
        image = picked(source, index_value, upload_value)
        return image, views.code_of(model, image, class_index(classes, image_class))

    def walk_along(code: np.ndarray, which: float, label: int | None) -> np.ndarray:
        d = int(which)
        lo, hi = views.slider_ranges(code[d : d + 1], spread[d : d + 1], span)[0]
        codes = views.traversal_codes(code, d, np.linspace(lo, hi, int(cfg.steps)))
        return views.display(views.decode(model, codes, label), min_side=80)

    def pick(index_value: float | None, upload_value: str | None, image_class: str | None, drawn_class: str | None,
             which: float, follow: bool = False) -> list[Any]:
        own = own_class(source, classes, index_value, upload_value) if follow else None
        image_class, drawn_class = (own, own) if own else (image_class, drawn_class)
        image, code = code_from(index_value, upload_value, image_class)
        label = class_index(classes, drawn_class)
        bounds = views.slider_ranges(code, spread, span)
        updates = [gr.update(**slider_settings(code[d], *bounds[d])) for d in range(count)]
        shown_image = gr.skip() if image is None else views.display(image)
        return [shown_image, views.display(views.decode(model, code, label)[0]), walk_along(code, which, label),
                followed(own), followed(own), *updates]

    def pick_test(index_value: float | None, upload_value: str | None, image_class: str | None,
                  drawn_class: str | None, which: float) -> list[Any]:
        """:func:`pick` for a test image picked (or an upload removed): both class choices follow its own class."""
        return pick(index_value, upload_value, image_class, drawn_class, which, follow=True)

    def move(index_value: float | None, upload_value: str | None, image_class: str | None, drawn_class: str | None,
             which: float, *values: float) -> list[Any]:
        code = views.with_values(code_from(index_value, upload_value, image_class)[1], dict(enumerate(values)))
        label = class_index(classes, drawn_class)
        return [views.display(views.decode(model, code, label)[0]), walk_along(code, which, label)]

    first_class = own_class(source, classes, 0, None) or (classes[0] if classes else None)
    first, code = code_from(0, None, first_class)
    ranges = views.slider_ranges(code, spread, span)
    unit = "the prior's standard deviation" if views.unit_scale(model) else "each dimension's spread over the data"
    gr.Markdown(f"Each slider moves one dimension of the picked image's code, ± {span:g} × {unit}."
                + (f" The first {count} of {model.latent_dim} dimensions have sliders; the others keep the image's "
                   "code." if count < model.latent_dim else "")
                + (" The image is encoded as its class (a test image's own; choose an upload's), and the sliders' "
                   "code is decoded as the class chosen beside it: the same code drawn as another class."
                   if classes else ""))
    with gr.Row():
        index, upload, image_class = picker(source, "Image")
        drawn_class = class_box(classes, "Decoded as the class", first_class)
    label = class_index(classes, first_class)
    with gr.Row():
        original = image_box("Image", value=None if first is None else views.display(first))
        decoded = image_box("Decoded from the sliders", value=views.display(views.decode(model, code, label)[0]))
    sliders = []
    with gr.Accordion(f"Latent dimensions ({count})", open=True), gr.Row():
        for d in range(count):
            sliders.append(gr.Slider(**slider_settings(code[d], *ranges[d]), label=f"z{d}", min_width=200,
                                     elem_classes=["vaelab-latent"]))
    dim = gr.Slider(0, max(model.latent_dim - 1, 1), value=0, step=1, label="Walk one dimension")
    walk = image_box(f"The walk along it from the sliders' code, {cfg.steps} steps over its slider's range",
                     value=walk_along(code, 0, label))

    picking = [index, upload, image_class, drawn_class, dim]
    outputs = [original, decoded, walk, image_class, drawn_class, *sliders]
    index.change(shown(pick_test), picking, outputs, api_name="pick")
    upload.change(shown(pick_test), picking, outputs, api_visibility="private")
    image_class.input(shown(pick), picking, outputs, api_visibility="private")  # (.input: a person's choice only)
    for changed in (*sliders, dim, drawn_class):
        event = changed.release if changed in sliders else changed.input if changed is drawn_class else changed.change
        event(shown(move), [*picking, *sliders], [decoded, walk], api_visibility="private", show_progress="hidden")


def interpolation_tab(source: Source, cfg: DictConfig, tab: Any) -> None:
    """The images decoded along the line between the codes of two picked images: drawn when the tab opens, again
    when a choice changes."""
    import gradio as gr

    classes = classes_of(source)
    with gr.Row():
        with gr.Column():
            a_index, a_upload, a_class = picker(source, "A", 0)
        with gr.Column():
            b_index, b_upload, b_class = picker(source, "B", 1)
    if classes:
        gr.Markdown("A and B are encoded as their own classes, and the whole line is decoded as one class: the two "
                    "images' codes drawn in that class.")
    drawn = class_box(classes, "The line decoded as the class", a_class.value)
    ends = "A's code … B's, drawn as the line's class" if classes else "A's reconstruction … B's"
    steps = gr.Slider(2, 16, value=int(cfg.steps), step=1, label=f"Images ({ends})")
    strip = image_box("(1 − α)·code(A) + α·code(B), α from 0 to 1, decoded")

    def run(a: float | None, a_file: str | None, a_cls: str | None, b: float | None, b_file: str | None,
            b_cls: str | None, drawn_cls: str | None, n: float, follow: str = "") -> list[Any]:
        own_a = own_class(source, classes, a, a_file) if follow == "a" else None
        own_b = own_class(source, classes, b, b_file) if follow == "b" else None
        a_cls, drawn_cls, b_cls = (own_a or a_cls), (own_a or drawn_cls), (own_b or b_cls)
        updates = [followed(own_a), followed(own_b), followed(own_a)]
        if not source.has_data and (a_file is None or b_file is None):
            return [gr.skip(), *updates]  # (uploads only: nothing to show until both are there)
        images = views.interpolate(source.model, picked(source, a, a_file), picked(source, b, b_file), int(n),
                                   class_index(classes, drawn_cls), class_index(classes, a_cls),
                                   class_index(classes, b_cls))
        return [views.display(images, min_side=96), *updates]

    def run_a(*values: Any) -> list[Any]:
        """:func:`run` for A picked: A's class and the line's follow its test image's own class."""
        return run(*values, follow="a")

    def run_b(*values: Any) -> list[Any]:
        """:func:`run` for B picked: B's class follows its test image's own class."""
        return run(*values, follow="b")

    inputs = [a_index, a_upload, a_class, b_index, b_upload, b_class, drawn, steps]
    outputs = [strip, a_class, b_class, drawn]
    tab.select(shown(run), inputs, outputs, api_name="interpolate")
    for handler, changed in ((run_a, a_index), (run_a, a_upload), (run_b, b_index), (run_b, b_upload), (run, steps)):
        changed.change(shown(handler), inputs, outputs, api_visibility="private", show_progress="hidden")
    for chosen in (a_class, b_class, drawn):  # (.input: a person's choice, not one that followed a picked image)
        chosen.input(shown(run), inputs, outputs, api_visibility="private", show_progress="hidden")


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
    classes = classes_of(source)
    with gr.Row():
        sampler = gr.Radio(choices, value=choices[0], label="Sample from")
        label = gr.Dropdown(classes, value=classes[0] if classes else None, label="Class", visible=bool(classes))
        seed = gr.Number(0, precision=0, label="Seed")
    button = gr.Button("Draw", variant="primary")
    grid = image_box(f"{cfg.num_samples} samples")

    def run(which: str, chosen: str | None, seed_value: float | None) -> np.ndarray:
        drawn = source.gmm() if which == "gmm" else None
        images = views.sample(model, int(cfg.num_samples), int(seed_value or 0), drawn, class_index(classes, chosen))
        return views.display(images, nrow=views.grid_rows(len(images)), min_side=64)

    button.click(shown(run), [sampler, label, seed], grid, api_name="sample")
    tab.select(shown(run), [sampler, label, seed], grid, api_visibility="private")


def reconstruction_tab(source: Source) -> None:
    """An uploaded image and its reconstruction (a conditional model's encoded and decoded as the chosen class)."""
    import gradio as gr

    classes = classes_of(source)
    gr.Markdown(f"Upload {views.expected(source.model.image_shape)}"
                + (", and choose its class: it is encoded and decoded as that class." if classes else "."))
    with gr.Row():
        upload = gr.File(label="Upload an image", type="filepath", height=120)
        klass = class_box(classes, "Its class", classes[0] if classes else None)
    with gr.Row():
        original = image_box("Uploaded")
        rebuilt = image_box("Reconstruction (decoded from its code)")

    def run(path: str | None, chosen: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        image = views.read_upload(path, source.model.image_shape)
        rebuilt_image = views.reconstruct(source.model, image, class_index(classes, chosen))
        return views.display(image), views.display(rebuilt_image)

    def rerun(path: str | None, chosen: str | None) -> Any:
        """:func:`run` again for another class chosen; nothing before an image is uploaded."""
        return (gr.skip(), gr.skip()) if path is None else run(path, chosen)

    upload.upload(shown(run), [upload, klass], [original, rebuilt], api_name="reconstruct")
    klass.input(shown(rerun), [upload, klass], [original, rebuilt], api_visibility="private")


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
