"""Segmentation: long audio cut into chunks at its quiet points.

Transcription runs the network on chunks of at most ``max_chunk_s`` seconds; each cut is
placed at the quietest ``quiet_window_s`` stretch between ``min_chunk_s`` and
``max_chunk_s``, so words are rarely split. :func:`chunks` works on a stream of blocks:
an hour of audio needs no more memory than one chunk.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from .errors import InputError


@dataclass(frozen=True)
class ChunkOptions:
    max_chunk_s: float = 20.0  # no chunk is longer
    min_chunk_s: float = 8.0  # cuts are searched between min and max
    quiet_window_s: float = 0.2  # energy is averaged over this window to find a pause

    def __post_init__(self):
        if not 0 < self.min_chunk_s < self.max_chunk_s:
            raise InputError("need 0 < min_chunk_s < max_chunk_s")


def quietest_cut(audio: np.ndarray, start: int, stop: int, window: int) -> int:
    """The sample in [start, stop) at the centre of the quietest ``window``-long stretch."""
    hop = max(window // 4, 1)
    energy = np.convolve(audio.astype(np.float64) ** 2, np.ones(hop) / hop, mode="valid")[::hop]
    energy = np.convolve(energy, np.ones(4) / 4, mode="same")  # four hops = one window
    lo, hi = start // hop, max(stop // hop, start // hop + 1)
    return int((lo + int(np.argmin(energy[lo:hi]))) * hop + hop // 2)


def chunks(blocks: Iterable[np.ndarray], rate: int,
           options: ChunkOptions = ChunkOptions()) -> Iterator[tuple[int, np.ndarray]]:
    """Cut a stream of audio blocks into (first sample, chunk) pieces at pauses."""
    longest, shortest = int(options.max_chunk_s * rate), int(options.min_chunk_s * rate)
    window = int(options.quiet_window_s * rate)
    buffer, offset = np.zeros(0, np.float32), 0
    for block in blocks:
        buffer = np.concatenate([buffer, block])
        while len(buffer) > longest:
            cut = quietest_cut(buffer[:longest], shortest, longest, window)
            yield offset, buffer[:cut]
            buffer, offset = buffer[cut:], offset + cut
    if len(buffer):
        yield offset, buffer
