"""The batched feature encoder: a recipe's frozen components over decoded clips, in the main
process (on the GPU when there is one), for the feature cache and live training data."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from v2a.cache.decoding import Decoded, DecodeRequest
from v2a.errors import UserError
from v2a.features import FrameRequest, batch_rows, encode_windows, extraction_slots, frame_request
from v2a.items import ClipItem
from v2a.recipe import Recipe, build_frozen
from v2a.sequences import FeatureSequence


class FeatureEncoder:
    """The recipe's codec, visual encoders and audio encoder, frozen, on ``device``.

    ``request`` says what :func:`~v2a.cache.decoding.decode_clip` must decode for them;
    :meth:`encode` turns decoded clips into :class:`~v2a.items.ClipItem`\\ s, one batch per call.
    """

    def __init__(self, recipe: Recipe, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.window = float(recipe.data.clip_seconds)
        slots = extraction_slots(recipe)
        if not slots:
            raise UserError(
                f"{recipe.source} has no codec, visual encoder or audio encoder to extract"
            )
        built = {slot: build_frozen(choice).to(self.device) for slot, choice in slots.items()}
        self.codec = built.get("codec")
        self.audio_encoder = built.get("audio_encoder")
        self.streams = {slot.split(".", 1)[1]: enc for slot, enc in built.items()
                        if slot.startswith("visual_encoders.")}
        audio: list[tuple[int, int]] = []
        if self.codec is not None:
            self.codec_audio = (int(self.codec.sample_rate), int(self.codec.channels))
            audio.append(self.codec_audio)
        if self.audio_encoder is not None:
            self.encoder_audio = (int(self.audio_encoder.sample_rate), 1)  # the mono mix
            audio.append(self.encoder_audio)
        video: list[FrameRequest] = [frame_request(enc) for enc in self.streams.values()]
        self.request = DecodeRequest(
            window=self.window, audio=tuple(dict.fromkeys(audio)), video=tuple(dict.fromkeys(video))
        )

    def to(self, device: str | torch.device) -> FeatureEncoder:
        """Move every component to ``device`` (where :meth:`encode` runs them); returns self."""
        self.device = torch.device(device)
        for module in (self.codec, self.audio_encoder, *self.streams.values()):
            if module is not None:
                module.to(self.device)
        return self

    def layout(self) -> dict[str, Any]:
        """Rates and widths of what the cache holds."""
        out: dict[str, Any] = {"codec": None, "streams": {}, "audio_features": None}
        if self.codec is not None:
            c = self.codec
            out["codec"] = {
                "frame_rate": float(c.frame_rate), "n_codebooks": int(c.n_codebooks),
                "codebook_size": int(c.codebook_size), "sample_rate": int(c.sample_rate),
                "frames": int(c.num_frames(round(self.window * c.sample_rate))),
            }
        for name, enc in self.streams.items():
            out["streams"][name] = {"rate": float(enc.rate), "dim": int(enc.dim),
                                    "fps": float(enc.fps)}
        if self.audio_encoder is not None:
            a = self.audio_encoder
            out["audio_features"] = {"rate": float(a.rate), "dim": int(a.dim),
                                     "sample_rate": int(a.sample_rate)}
        return out

    @torch.inference_mode()
    def encode(self, decoded: Sequence[Decoded]) -> list[ClipItem]:
        """Decoded clips → items (values float32 on the CPU), one forward pass per component
        for the whole batch (clips whose frame times or sizes differ are passed separately, see
        :func:`~v2a.features.encode_windows`)."""
        n = len(decoded)
        codes: list[Tensor | None] = [None] * n
        if self.codec is not None:
            wav = torch.stack([d.audio[self.codec_audio] for d in decoded]).to(self.device)
            out = self.codec.encode(wav).cpu()  # [b, k, l]
            codes = list(out)
        streams = encode_windows(self.streams, [d.video for d in decoded], device=self.device)
        audio: list[FeatureSequence | None] = [None] * n
        if self.audio_encoder is not None:
            wav = torch.stack([d.audio[self.encoder_audio] for d in decoded]).to(self.device)
            audio = batch_rows(self.audio_encoder.encode(wav))
        frame_rate = float(self.codec.frame_rate) if self.codec is not None else None
        return [ClipItem(clip=d.clip, codes=codes[i], streams=streams[i], audio_features=audio[i],
                         frame_rate=frame_rate) for i, d in enumerate(decoded)]
