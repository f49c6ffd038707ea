"""The Space's Gradio Blocks (UI and event wiring, hence its endpoint names) over a StandIn."""

import os
from typing import Any

import gradio as gr
from gradio.data_classes import FileData, GradioModel
from pydantic import model_validator

from ._handlers import StandIn

# gradio reads this when a Blocks or Client is created; the stand-in must never phone home.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

DEPTH_MODE = "Depthmap and Camera Branch"
POINTMAP_MODE = "Pointmap Branch"
PREDICTION_MODES = (DEPTH_MODE, POINTMAP_MODE)


class VideoPayload(GradioModel):
    """The Gradio 5 video payload the real Space takes: {"video": FileData, "subtitles": …}."""

    video: FileData
    subtitles: FileData | None = None

    @model_validator(mode="before")
    @classmethod
    def _accept_bare_file(cls, data: Any) -> Any:
        # Gradio 6 browsers and clients send a bare FileData; accept both shapes.
        if isinstance(data, dict) and "path" in data and "video" not in data:
            return {"video": data, "subtitles": None}
        return data


class SpaceVideo(gr.Video):
    """gr.Video taking the real Space's Gradio 5 payload, so callers written for it work here."""

    is_template = True  # keeps the frontend's and the API's component name "video"
    data_model = VideoPayload  # type: ignore[assignment]  # the Space's payload shape

    def preprocess(self, payload: Any) -> str | None:
        """The uploaded video's server path."""
        if payload is None:
            return None
        return super().preprocess(payload.video)

    def example_payload(self) -> Any:
        """An example in the Gradio 5 shape."""
        return {"video": super().example_payload(), "subtitles": None}


def clear_fields() -> None:
    """Clear the 3D viewer."""
    return None


def update_log() -> str:
    """The log line shown while reconstructing."""
    return "Loading and Reconstructing..."


def build_demo(stand_in: StandIn) -> gr.Blocks:
    """The Space's UI and event wiring (hence its endpoint names), served by the stand-in."""
    with gr.Blocks(title="VGGT (local stand-in)", analytics_enabled=False) as demo:
        is_example = gr.Textbox(label="is_example", visible=False, value="None")
        gr.Textbox(label="num_images", visible=False, value="None")
        gr.Markdown(
            "# VGGT: Visual Geometry Grounded Transformer (local stand-in)\n"
            "A lightweight deterministic stand-in for the model, with the "
            "`facebook/vggt` Space's API. The point clouds are synthetic."
        )
        target_dir_output = gr.Textbox(label="Target Dir", visible=False, value="None")
        with gr.Row():
            with gr.Column(scale=2):
                input_video = SpaceVideo(label="Upload Video", interactive=True)
                input_images = gr.File(
                    file_count="multiple", label="Upload Images", interactive=True
                )
                image_gallery = gr.Gallery(
                    label="Preview",
                    columns=4,
                    height="300px",
                    buttons=["download"],
                    object_fit="contain",
                    preview=True,
                )
            with gr.Column(scale=4):
                with gr.Column():
                    gr.Markdown("**3D Reconstruction (Point Cloud and Camera Poses)**")
                    log_output = gr.Markdown(
                        "Please upload a video or images, then click Reconstruct.",
                        elem_classes=["custom-log"],
                    )
                    reconstruction_output = gr.Model3D(height=520, zoom_speed=0.5, pan_speed=0.5)
                    predictions_output = (
                        gr.File(label="predictions.npz") if stand_in.return_predictions else None
                    )
                with gr.Row():
                    submit_btn = gr.Button("Reconstruct", scale=1, variant="primary")
                    gr.ClearButton(
                        [
                            input_video,
                            input_images,
                            reconstruction_output,
                            log_output,
                            target_dir_output,
                            image_gallery,
                        ],
                        scale=1,
                    )
                with gr.Row():
                    prediction_mode = gr.Radio(
                        list(PREDICTION_MODES),
                        label="Select a Prediction Mode",
                        value=DEPTH_MODE,
                        scale=1,
                        elem_id="my_radio",
                    )
                with gr.Row():
                    conf_thres = gr.Slider(
                        minimum=0,
                        maximum=100,
                        value=50,
                        step=0.1,
                        label="Confidence Threshold (%)",
                    )
                    frame_filter = gr.Dropdown(
                        choices=["All"], value="All", label="Show Points from Frame"
                    )
                    with gr.Column():
                        show_cam = gr.Checkbox(label="Show Camera", value=True)
                        mask_sky = gr.Checkbox(label="Filter Sky", value=False)
                        mask_black_bg = gr.Checkbox(label="Filter Black Background", value=False)
                        mask_white_bg = gr.Checkbox(label="Filter White Background", value=False)

        demo_outputs = [reconstruction_output, log_output, frame_filter]
        if predictions_output is not None:
            demo_outputs.append(predictions_output)
        settings = [conf_thres, frame_filter, mask_black_bg, mask_white_bg, show_cam, mask_sky]
        submit_btn.click(fn=clear_fields, inputs=[], outputs=[reconstruction_output]).then(
            fn=update_log, inputs=[], outputs=[log_output]
        ).then(
            fn=stand_in.gradio_demo,
            inputs=[target_dir_output, *settings, prediction_mode],
            outputs=demo_outputs,
        ).then(fn=lambda: "False", inputs=[], outputs=[is_example])

        # One listener per control, in the demo's order: /update_visualization, _1 … _6.
        viz_inputs = [target_dir_output, *settings, prediction_mode, is_example]
        for control in (*settings, prediction_mode):
            control.change(  # type: ignore[attr-defined]  # every control here has .change
                stand_in.update_visualization, viz_inputs, [reconstruction_output, log_output]
            )
        upload_outputs = [reconstruction_output, target_dir_output, image_gallery, log_output]
        for upload in (input_video, input_images):
            upload.change(
                fn=stand_in.update_gallery_on_upload,
                inputs=[input_video, input_images],
                outputs=upload_outputs,
            )
    return demo
