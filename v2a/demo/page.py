"""The demo's web page (Gradio Blocks) around a :class:`~v2a.demo.engine.DemoEngine`, and
serving it. Gradio is imported here only, on first use (:func:`load_gradio`), so the rest of
v2a never needs it."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from v2a.demo.engine import KEEP_RESULTS_SECONDS, DemoEngine, DemoError, DemoRequest
from v2a.errors import UserError, user_facing_message
from v2a.log import warn

GRADIO_MISSING = ("the web demo needs Gradio, which is not installed; install v2a[demo] "
                  "(pip install 'v2a[demo]')")
#: The elements a browser (or a test) finds the page's parts by.
ELEMENT_IDS = dict(video="v2a-video", recipe="v2a-recipe", generate="v2a-generate",
                   result_video="v2a-result-video", result_audio="v2a-result-audio",
                   spectrogram="v2a-spectrogram", files="v2a-files", summary="v2a-summary")

VIDEO_HEIGHT = 300  # pixels: both videos and the settings fit on one screen


def load_gradio():
    """The ``gradio`` module, with its analytics (and the version check they make) off, or a
    :class:`DemoError` saying to install ``v2a[demo]``."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # read by gradio when it is imported
    try:
        import gradio
    except ImportError:
        raise DemoError(GRADIO_MISSING) from None
    return gradio


def host_warning(host: str, port: int) -> str | None:
    """The warning for serving on ``host``: None for a loopback address (:func:`is_loopback`)."""
    if is_loopback(host):
        return None
    return (f"--host {host} is not a loopback address: anyone who can reach this machine on port "
            f"{port} can use the demo; put it behind a reverse proxy with authentication")


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only (``localhost``, 127.0.0.0/8, ::1)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def on_generate(engine: DemoEngine, gr, video, recipe, steps, cfg, candidates, seed, prompt,
                negative_prompt, regenerate):
    """The Generate button: the page's values as a :class:`DemoRequest`, its result as the
    output components' values; a user's error is shown on the page as the one sentence the
    CLI prints (``gr.Error``), a bug keeps its traceback (in the server's log)."""
    request = DemoRequest(
        video=Path(video) if video else None, recipe=recipe, steps=steps or "",
        cfg=None if cfg is None else float(cfg),
        candidates=None if candidates is None else int(candidates),
        seed=None if seed is None else int(seed), prompt=prompt or "",
        negative_prompt=negative_prompt or "", regenerate=regenerate or "")
    try:
        result = engine.generate(request)
    except UserError as exc:
        raise gr.Error(str(exc), duration=None) from None
    except Exception as exc:  # noqa: BLE001 (a user's environment in one sentence, else a bug)
        message = user_facing_message(exc)
        if message is None:
            raise
        raise gr.Error(message, duration=None) from None
    for text in result.warnings:
        gr.Warning(text)
    return (str(result.mp4), str(result.audio), str(result.spectrogram),
            [str(result.mp4), str(result.audio)], result.summary)


def on_recipe(engine: DemoEngine, gr, recipe):
    """Picking a recipe: its sampling values in the settings, the prompts shown only when it
    has a text encoder."""
    try:
        shown = engine.defaults(recipe)
    except UserError as exc:
        raise gr.Error(str(exc), duration=None) from None
    return (gr.update(value=shown.steps), gr.update(value=shown.cfg),
            gr.update(value=shown.candidates), gr.update(value=shown.seed),
            gr.update(visible=shown.takes_text))


def build_page(engine: DemoEngine):
    """The page: the upload and the settings on the left, the results on the right; requests
    are queued one at a time (one generation per device at once)."""
    gr = load_gradio()
    first = engine.defaults(engine.default_choice)
    keep = int(KEEP_RESULTS_SECONDS)  # Gradio's copies of the files go when the engine's do
    with gr.Blocks(title="v2a demo", analytics_enabled=False, delete_cache=(keep, keep)) as page:
        gr.Markdown("## v2a: sound for a silent video\nUpload a video, pick a recipe, press "
                    f"Generate. Videos up to {engine.max_seconds:g} s.")
        with gr.Row():
            with gr.Column():
                video = gr.Video(label="Video", sources=["upload"], height=VIDEO_HEIGHT,
                                 elem_id=ELEMENT_IDS["video"])
                recipe = gr.Dropdown(engine.choices, value=engine.default_choice,
                                     label="Recipe or model", elem_id=ELEMENT_IDS["recipe"])
                steps = gr.Textbox(first.steps, label="Decoding steps per RVQ level (e.g. 12,4,2)")
                cfg = gr.Slider(0.0, 10.0, value=first.cfg, step=0.1,
                                label="Guidance scale (cfg)")
                candidates = gr.Slider(1, 8, value=first.candidates, step=1,
                                       label="Candidates (reranked when the recipe has a reranker)")
                seed = gr.Number(first.seed, precision=0, label="Seed")
                with gr.Group(visible=first.takes_text) as text_group:
                    prompt = gr.Textbox(label="Prompt: what the sound should be")
                    negative = gr.Textbox(label="Negative prompt: what it should not be")
                regenerate = gr.Textbox(
                    label="Stretch to regenerate (seconds, e.g. 1.5-3); the video's own sound is "
                    "kept elsewhere")
                button = gr.Button("Generate", variant="primary", elem_id=ELEMENT_IDS["generate"])
            with gr.Column():
                result_video = gr.Video(label="Video with the generated sound", interactive=False,
                                        height=VIDEO_HEIGHT,
                                        elem_id=ELEMENT_IDS["result_video"])
                result_audio = gr.Audio(label="Generated sound", type="filepath",
                                        interactive=False, elem_id=ELEMENT_IDS["result_audio"])
                spectrogram = gr.Image(label="Spectrogram, detected onsets in cyan",
                                       type="filepath", format="png", interactive=False,
                                       elem_id=ELEMENT_IDS["spectrogram"])
                files = gr.File(label="Download", file_count="multiple", interactive=False,
                                elem_id=ELEMENT_IDS["files"])
                summary = gr.Markdown(elem_id=ELEMENT_IDS["summary"])
        recipe.change(lambda name: on_recipe(engine, gr, name), inputs=[recipe],
                      outputs=[steps, cfg, candidates, seed, text_group])
        button.click(lambda *values: on_generate(engine, gr, *values),
                     inputs=[video, recipe, steps, cfg, candidates, seed, prompt, negative,
                             regenerate],
                     outputs=[result_video, result_audio, spectrogram, files, summary])
    page.queue(default_concurrency_limit=1)
    return page


def serve(engine: DemoEngine, *, host: str, port: int, block: bool = True):
    """Serve the page on ``host:port`` (a warning when ``host`` is not a loopback address): no
    share link, no analytics, no server-side rendering (no Node.js), no API page. Blocks until
    the process is stopped unless ``block`` is False; returns the page."""
    warning = host_warning(host, port)
    if warning:
        warn(warning)
    page = build_page(engine)
    page.launch(server_name=host, server_port=port, share=False, inbrowser=False,
                show_error=False, ssr_mode=False, mcp_server=False, footer_links=[],
                allowed_paths=[str(engine.workdir)], prevent_thread_lock=not block,
                quiet=False)
    return page
