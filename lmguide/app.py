"""The web page: ``python -m lmguide.app ckpt_path=<run>/checkpoints/best.ckpt`` (Hydra, Gradio).

Serves http://127.0.0.1:7860 (``host``/``port``) on this machine only: no share link, no analytics,
nothing sent elsewhere. Upload an image or a short video, or pick a demo face; per face the page shows
P(fake) and the verdict at the checkpoint's validation-calibrated threshold, the crop, the mean attention
with the landmark mask outlined, each head's map and Grad-CAM; for a video also P(fake) per sampled
frame as a plot. All of it comes from :mod:`lmguide.inference.page` (predict's scoring, visualize's pictures);
an input it cannot analyse is shown as a message on the page and the server keeps serving.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from lmguide.data.media import IMAGE_SUFFIXES, VIDEO_SUFFIXES
from lmguide.inference.page import Analysis, Analyzer, AppInputError
from lmguide.runs.cli import check_argv, friendly_errors
from lmguide.runs.errors import require_number
from lmguide.runs.runtime import CONF_DIR
from lmguide.viz.timeline import score_plot

log = logging.getLogger(__name__)

#: set before gradio is imported: no usage statistics, no version check, no hub calls
OFFLINE_ENV = {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}


def _fmt_box(box) -> str:
    return "(" + ", ".join(f"{v:.0f}" for v in box) + ")"


def markdown_text(text: str) -> str:
    """``text`` (read from a user's checkpoint) shown as itself in Markdown: HTML and markup escaped."""
    import html

    return "".join(f"\\{c}" if c in "\\`*_[]#|~" else c for c in html.escape(text))


def result_markdown(a: Analysis) -> str:
    """The page's result text: the file's verdict, a row per face, the threshold and its source."""
    lines = [
        f"### {a.name}: P(fake) = {a.prob_fake:.4f} → **{a.verdict}**",
        "",
        f"Verdict rule: {a.rule}. Threshold {a.threshold:.3f}: {a.threshold_note}.",
        "",
        f"*Model: {markdown_text(a.provenance)}.*" if a.provenance else "",
        "",
        "| face | frame | P(fake) | verdict | box (x0, y0, x1, y1) | detector score |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for f in a.faces:
        lines.append(
            f"| {f.face} | {f.frame} | {f.prob_fake:.4f} | {f.verdict} | {_fmt_box(f.box)} "
            f"| {f.det_score:.2f} |"
        )
    if a.kind == "video":
        frames = len({f for f, _ in a.frame_scores})
        over = ", ".join(map(str, a.fake_frames)) or "none"
        run = f"; the fake run: frames {a.fake_run[0]}–{a.fake_run[1]}" if a.fake_run else ""
        lines += ["", f"{frames} sampled frames with a face; at or above the threshold: {over}{run}."]
    notes = [*a.notes, *(f"face {f.face}: {f.note}" for f in a.faces if f.note)]
    lines += [f"- {n}" for n in notes]
    lines += ["", f"Analysed in {a.seconds:.2f} s."]
    return "\n".join(lines)


def error_markdown(message: str) -> str:
    return f"### Cannot analyse this file\n\n{message}"


def respond(analyzer: Analyzer, path, name: str | None = None):
    """``(markdown, gallery tiles, plot or None)`` for one upload; a readable message for bad input."""
    try:
        a = analyzer.analyse(path, name)
    except AppInputError as err:
        return error_markdown(str(err)), [], None
    except Exception as err:  # a bug, or a file that breaks a library: reported, the server keeps going
        log.exception("analysis of %s failed", path)
        return error_markdown(f"the analysis failed ({type(err).__name__}: {err})"), [], None
    tiles = [t for f in a.faces for t in f.tiles]
    plot = (
        score_plot(a.frame_scores, a.threshold, f"{a.name}: P(fake) per sampled frame", a.fake_run)
        if a.frame_scores
        else None
    )
    return result_markdown(a), tiles, plot


def verdict_record(a: Analysis) -> dict:
    """One analysed file as plain JSON (the page's ``/verdicts`` API): the verdict and every face."""
    return {
        "file": a.name,
        "kind": a.kind,
        "prob_fake": a.prob_fake,
        "verdict": a.verdict,
        "rule": a.rule,
        "threshold": a.threshold,
        "faces": [
            {"face": f.face, "frame": f.frame, "prob_fake": f.prob_fake, "verdict": f.verdict}
            for f in a.faces
        ],
        "fake_frames": a.fake_frames,
        "frames_no_face": a.frames_no_face,
        "model": a.provenance,
    }


def verdicts(analyzer: Analyzer, paths) -> list[dict]:
    """Every file of one call analysed in turn: its record, or ``{"file", "error"}`` for bad input."""
    out = []
    for path in paths or []:
        name = Path(str(path)).name
        try:
            out.append(verdict_record(analyzer.analyse(path, name)))
        except AppInputError as err:
            out.append({"file": name, "error": str(err)})
    return out


def respond_many(analyzer: Analyzer, paths):
    """Several uploads at once: a table of their verdicts, then each file's result; the pictures of all
    (captions name the file) and the first video's timeline."""
    if len(paths) == 1:
        return respond(analyzer, paths[0], Path(paths[0]).name)
    rows, parts, tiles, plot = [], [], [], None
    for path in paths:
        name = Path(path).name
        md, file_tiles, file_plot = respond(analyzer, path, name)
        parts.append(md)
        tiles += [(img, f"{name}: {cap}") for img, cap in file_tiles]
        plot = plot if plot is not None else file_plot
        head = md.splitlines()[0]
        verdict = head.rsplit("**", 2)[1] if head.count("**") >= 2 else "not analysed"
        rows.append(f"| {markdown_text(name)} | {verdict} |")
    table = [f"### {len(paths)} files", "", "| file | verdict |", "| --- | --- |", *rows, ""]
    return "\n".join(table) + "\n\n---\n\n".join(parts), tiles, plot


def build_page(analyzer: Analyzer, demos: dict[str, Path]):
    """The Gradio Blocks of the page (not launched)."""
    for k, v in OFFLINE_ENV.items():
        os.environ.setdefault(k, v)
    import gradio as gr

    suffixes = [*IMAGE_SUFFIXES, *VIDEO_SUFFIXES]
    with gr.Blocks(title="lmguide: is this face fake?", analytics_enabled=False) as page:
        gr.Markdown(
            "## lmguide: is this face fake?\n"
            "Upload an image or a short video, or pick a demo face. Each face is detected and cropped as "
            f"in training and scored; the verdict uses threshold **{analyzer.threshold:.3f}** "
            f"({analyzer.threshold_note})."
        )
        with gr.Row():
            upload = gr.File(
                label="images or short videos (several at once are listed with their verdicts)",
                file_types=suffixes,
                file_count="multiple",
                type="filepath",
                elem_id="upload",
            )
            demo = gr.Dropdown(
                choices=list(demos), value=None, label="or a demo face", elem_id="demo", interactive=True
            )
        result = gr.Markdown("Waiting for an image or a video.", elem_id="result")
        gallery = gr.Gallery(
            label="per face: crop, mean attention (landmark mask outlined), Grad-CAM, each head's map",
            columns=4,
            height="auto",
            format="png",
            elem_id="faces",
        )
        plot = gr.Image(label="P(fake) per sampled frame", elem_id="plot", type="numpy", visible=False)

        def show(md, tiles, frame_plot):
            return md, tiles, gr.update(value=frame_plot, visible=frame_plot is not None)

        def on_upload(paths):
            if not paths:
                return gr.skip(), gr.skip(), gr.skip()
            return show(*respond_many(analyzer, [paths] if isinstance(paths, str) else list(paths)))

        def on_demo(choice):
            if not choice:
                return gr.skip(), gr.skip(), gr.skip()
            return show(*respond(analyzer, demos[choice], choice))

        # one queue for both: analyses run one at a time, in the order they came
        upload.change(
            on_upload,
            upload,
            [result, gallery, plot],
            concurrency_id="analyse",
            api_visibility="undocumented",
        )
        demo.change(
            on_demo, demo, [result, gallery, plot], concurrency_id="analyse", api_visibility="undocumented"
        )
        # the API (README: gradio_client): files in, one JSON record per file out, in the same queue
        api_files = gr.File(file_count="multiple", type="filepath", visible=False)
        api_out = gr.JSON(visible=False)
        gr.Button(visible=False).click(
            lambda paths: verdicts(analyzer, paths), api_files, api_out, api_name="verdicts",
            concurrency_id="analyse",
        )  # fmt: skip
    return page


def demo_media(cfg: DictConfig) -> dict[str, Path]:
    """The configured demo faces found in the demo cache (never fetched here: the page stays offline)."""
    root = Path(cfg.paths.cache_dir).expanduser() / "demo" / "media"
    found = {p.name: p for p in sorted(root.glob("*/*")) if p.is_file()}
    demos = {n: found[n] for n in cfg.demo_faces or [] if n in found}
    missing = [n for n in cfg.demo_faces or [] if n not in found]
    if missing:
        log.warning(
            "demo faces not in %s: %s (python -m lmguide.prepare fetches the demo media)", root, missing
        )
    return demos


def check_options(cfg: DictConfig) -> None:
    require_number("port", cfg.port, low=0, high=65535, integer=True, example=7860)  # a TCP port
    for key, low in (
        ("frames_per_video", 1),
        ("max_megapixels", 0.01),
        ("max_faces", 1),
        ("max_upload_mb", 1),
    ):
        require_number(key, cfg[key], low=low)


def upload_folder(on_sigterm: bool = True) -> Path:
    """A folder of this process's own for Gradio's uploads (not the shared /tmp/gradio), removed when
    the process exits, by Ctrl-C or SIGTERM as well: uploaded faces do not outlive the page."""
    import atexit
    import shutil
    import signal
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="lmguide-app-uploads-"))
    os.environ["GRADIO_TEMP_DIR"] = str(folder)
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    untouched = signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None)
    if on_sigterm and untouched:  # SIGTERM then exits through the atexit hooks
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    return folder


def serve(cfg: DictConfig, block: bool = True):
    """Load the checkpoint, build the page and serve it on ``cfg.host:cfg.port``; returns the page."""
    check_options(cfg)
    analyzer = Analyzer.from_cfg(cfg)
    demos = demo_media(cfg)
    uploads = upload_folder(on_sigterm=block)  # in-process (tests): the caller's signals stay its own
    page = build_page(analyzer, demos)
    print(
        f"lmguide app: {cfg.ckpt_path} (threshold {analyzer.threshold:.3f}: {analyzer.threshold_note}); "
        f"{len(demos)} demo face(s); serving on http://{cfg.host}:{cfg.port}; uploads kept in {uploads} "
        "until the page exits",
        flush=True,
    )
    page.queue(default_concurrency_limit=1)
    page.launch(
        server_name=str(cfg.host),
        server_port=int(cfg.port),
        share=False,
        inbrowser=False,
        ssr_mode=False,
        pwa=False,
        mcp_server=False,
        enable_monitoring=False,
        footer_links=[],
        max_file_size=f"{int(cfg.max_upload_mb)}mb",
        prevent_thread_lock=not block,
        quiet=True,
    )
    return page


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="app")
@friendly_errors
def main(cfg: DictConfig) -> None:
    serve(cfg)


if __name__ == "__main__":
    check_argv()
    main()
