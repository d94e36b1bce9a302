"""Prompt tokens of the reference model: UTF-8 bytes, markers, state bins and depth codes.

Layout of the vocabulary: ids 0..255 are bytes, then the markers below, then `state_bins` state
tokens (<state_0>..), then `depth_codes` depth tokens (<depth_0>..). The prompt follows the
MolmoAct2 release [molmoact2.md §1.1]: all images first ("Image k" + <im_start> + patch
placeholders + <im_end>), then the task, <setup_start>..<setup_end>, the state tokens,
<control_start>..<control_end>, and the trigger (<depth_output><depth_start> for depth
reasoning, else <action_output>).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

MARKERS = (
    "<pad>", "<bos>", "<eos>", "<im_patch>", "<im_start>", "<im_end>", "<user>", "<assistant>",
    "<setup_start>", "<setup_end>", "<state_start>", "<state_end>", "<control_start>",
    "<control_end>", "<depth_output>", "<action_output>", "<depth_start>", "<depth_end>",
)  # fmt: skip


class PromptTokenizer:
    def __init__(self, state_bins: int = 256, depth_codes: int = 128) -> None:
        self.marker = {name: 256 + index for index, name in enumerate(MARKERS)}
        self.state_start = 256 + len(MARKERS)
        self.depth_start = self.state_start + state_bins
        self.state_bins = state_bins
        self.depth_codes = depth_codes
        self.size = self.depth_start + depth_codes

    @property
    def patch_id(self) -> int:
        return self.marker["<im_patch>"]

    def text(self, value: str) -> list[int]:
        return list(value.encode("utf-8"))

    def depth_token(self, code: int) -> int:
        return self.depth_start + code

    def prompt(
        self,
        *,
        images: int,
        tokens_per_image: int,
        task: str,
        setup: str,
        control: str,
        state_bins: Sequence[int] | npt.NDArray[np.int64],
        depth: bool,
    ) -> npt.NDArray[np.int64]:
        m = self.marker
        ids = [m["<bos>"]]
        for index in range(images):
            ids += self.text(f"Image {index + 1}")
            ids += [m["<im_start>"]] + [m["<im_patch>"]] * tokens_per_image + [m["<im_end>"]]
        ids += [m["<user>"], *self.text(task)]
        ids += [m["<setup_start>"], *self.text(setup), m["<setup_end>"]]
        ids += [m["<state_start>"]] + [self.state_start + int(b) for b in state_bins]
        ids += [m["<state_end>"], m["<control_start>"], *self.text(control)]
        ids += [m["<control_end>"], m["<assistant>"]]
        ids += [m["<depth_output>"], m["<depth_start>"]] if depth else [m["<action_output>"]]
        return np.asarray(ids, dtype=np.int64)

    def after_depth(self) -> npt.NDArray[np.int64]:
        """Tokens fed after the last depth code: <depth_end><action_output>."""
        return np.asarray([self.marker["<depth_end>"], self.marker["<action_output>"]], np.int64)
