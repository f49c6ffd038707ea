"""What a run on the public `facebook/vggt` Space costs the caller, in words for New run."""

from __future__ import annotations

from vggt_core import StudioConfig

PUBLIC_SPACE = "facebook/vggt"
# The Space's `/gradio_demo` runs under `@spaces.GPU(duration=120)`: ZeroGPU checks the 120 s
# asked against what is left of the caller's daily quota, whatever the run then takes.
GPU_SECONDS_ASKED = 120
DAILY_QUOTA_MIN = {"anonymous": 2.0, "free account": 3.5, "PRO account": 25.0}


def quota_notice(config: StudioConfig) -> str | None:
    """Markdown on cost, quota, sharing and licence before a run on the public Space; None for
    any other backend (a URL or another Space)."""
    if config.backend.strip().lower() != PUBLIC_SPACE:
        return None
    if config.token is None:
        who = (
            "No HF token is set, so the Space sees you as **anonymous**: about "
            f"**{DAILY_QUOTA_MIN['anonymous']:g} min** of GPU a day, about one reconstruction. "
            "With a token (HF_TOKEN) a free account gets about "
            f"{DAILY_QUOTA_MIN['free account']:g} min, PRO about "
            f"{DAILY_QUOTA_MIN['PRO account']:g} min."
        )
    else:
        who = (
            "An HF token is set, so your account's quota applies: about "
            f"**{DAILY_QUOTA_MIN['free account']:g} min** of GPU a day for a free account "
            f"(one reconstruction), about **{DAILY_QUOTA_MIN['PRO account']:g} min** with PRO."
        )
    return (
        f"**What a run costs on the public Space.** Each reconstruction asks ZeroGPU for "
        f"**{GPU_SECONDS_ASKED} s** of GPU, counted against a daily quota. {who} "
        "Re-rendering a finished run (threshold, masks, cameras) runs on the Space's CPU and "
        "costs no GPU quota.\n\n"
        "Photos sent to the public Space are stored in a folder on that shared machine until it "
        "restarts. The public model's results are for **non-commercial use** (CC BY-NC 4.0)."
    )
