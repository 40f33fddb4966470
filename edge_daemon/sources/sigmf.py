"""Replay a SigMF recording (config `type = "sigmf"`), e.g. one made by `edge-tc synth stream`.

`pace = "realtime"` hands a chunk out when its last sample is due at the recording's sample
rate (the wall clock starts at the first read); `"fast"` hands chunks out as fast as they are
read. With `loop = true` the recording starts over at its end: the sample index keeps counting
(the second pass of an N-sample recording starts at index N) and the first chunk of each new
pass is flagged `discontinuity`, since the wrap is not a continuation of the signal.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edge_core.errors import SourceError
from edge_core.iq.sigmf_io import Recording, open_recording
from edge_daemon.sources.base import (
    Chunk,
    PacedChunks,
    Source,
    SourceBackend,
    SourceConfig,
    SourceEvents,
)

KEY = "sigmf"


@dataclass(frozen=True)
class SigMFSourceConfig(SourceConfig):
    """`[source]` table for a SigMF replay.

    path: the recording (`X`, `X.sigmf-meta` or `X.sigmf-data`). pace: "realtime" (at the
    recording's sample rate) or "fast". loop: start over at the end. chunk_samples: samples per
    chunk handed to the assembler.
    """

    type: Literal["sigmf"] = "sigmf"
    path: str = ""
    pace: Literal["realtime", "fast"] = "realtime"
    loop: bool = False
    chunk_samples: int = 16384

    def problems(self) -> list[tuple[str, str]]:
        out = []
        if not self.path:
            out.append(("path", "missing: the SigMF recording to replay"))
        if self.chunk_samples < 1:
            out.append(("chunk_samples", f"want >= 1, got {self.chunk_samples}"))
        return out


class SigMFSource(Source):
    """Chunks of a recording, paced or not, optionally looping."""

    config: SigMFSourceConfig

    def __init__(self, config: SigMFSourceConfig, events: SourceEvents) -> None:
        super().__init__(config, events)
        self._recording: Recording | None = None
        self._chunks: Iterator[tuple[int, np.ndarray]] | None = None
        self._paced: PacedChunks | None = None
        self._passes = 0  # completed passes over the recording
        self._wrapped = False

    @property
    def recording(self) -> Recording:
        """The open recording; SourceError before `open`."""
        if self._recording is None:
            raise SourceError(f"sigmf source {self.config.path}: not open")
        return self._recording

    @property
    def annotations(self) -> list[dict[str, Any]]:
        """The recording's annotations (one per packet for generated streams)."""
        return self.recording.annotations

    @property
    def sample_rate_hz(self) -> float:
        return self.recording.sample_rate_hz

    @property
    def finished(self) -> bool:
        return self._paced is not None and self._paced.finished

    def open(self) -> None:
        self.close()
        self._recording = open_recording(Path(self.config.path))
        if self._recording.num_samples == 0:
            raise SourceError(f"{self._recording.data_path}: the recording holds no samples")
        self._paced = PacedChunks(self._recording.sample_rate_hz, self.config.pace == "realtime")
        self._passes = 0
        self._wrapped = False
        self._chunks = self._recording.iter_chunks(self.config.chunk_samples)

    def _next(self) -> tuple[int, np.ndarray] | None:
        """The next (index within the recording, samples), wrapping when looping."""
        assert self._chunks is not None
        item = next(self._chunks, None)
        if item is None and self.config.loop:
            self._passes += 1
            self._wrapped = True
            self._chunks = self.recording.iter_chunks(self.config.chunk_samples)
            item = next(self._chunks, None)
        return item

    def read(self, timeout_s: float) -> Chunk | None:
        if self._chunks is None or self._paced is None:
            raise SourceError(f"sigmf source {self.config.path}: read() before open()")
        item = self._paced.next(self._next, timeout_s)
        if item is None:
            return None
        first, samples, arrival = item
        discontinuity, self._wrapped = self._wrapped, False
        index = self._passes * self.recording.num_samples + first
        return Chunk(samples, index, arrival, discontinuity)

    def close(self) -> None:
        if self._chunks is not None:
            close = getattr(self._chunks, "close", None)
            if close is not None:
                close()  # the generator closes the data file
        self._chunks = None
        if self._paced is not None:
            self._paced.drop()


def _create(config: SourceConfig, events: SourceEvents) -> Source:
    assert isinstance(config, SigMFSourceConfig)
    return SigMFSource(config, events)


SOURCE = SourceBackend(KEY, SigMFSourceConfig, _create, "nothing (sigmf is a core dependency)")
