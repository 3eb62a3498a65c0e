"""Lip-sync metrics with SyncNet: LSE-D, LSE-C and the AV offset (`reference/metrics.md` §1).

The reference is joonson/syncnet_python (``SyncNetModel.py`` class ``S``, ``SyncNetInstance.py``
``evaluate`` and ``calc_pdist``, ``run_pipeline.py`` for the face crop) as used by Wav2Lip's
``evaluation/scores_LSE`` scripts. This package is written from the prose description of those
files; no code is copied.

Modules, by responsibility:

* `metrics.syncnet.net`: the network (`SyncNet`, alias `S`), the official and expert checkpoint
  formats (`load_syncnet`, `save_expert`, `read_expert_config`) and the shared loaded network;
* `metrics.syncnet.features`: the reference evaluation on prepared inputs -- int16 audio, MFCC,
  5-frame windows, the 224 x 224 crops, embeddings, offset distances and scores (`evaluate`);
* `metrics.syncnet.jpeg`: syncnet_python's JPEG frame path (ffmpeg's JPEG encoder and back), the
  ``frame_path: jpeg_roundtrip`` option of the metrics;
* `metrics.syncnet.metrics`: the registered metrics LSE-D, LSE-C and AV-offset (parameters, input
  checks, crop boxes from the reference landmarks, the per-clip result cache).

The face-crop geometry itself (boxes from landmarks, median smoothing, the padded crop) is in
`faces.crops`. The names other code uses are re-exported here:
``from metrics import syncnet as sn; sn.evaluate(...)``.
"""

from __future__ import annotations

from metrics.syncnet.features import (CPU_BATCH, CROP_SIZE, CUDA_BATCH, DIST_EPS, FPS,
                                      FRAMES_PER_WINDOW, MFCC_PER_FRAME, MFCC_PER_WINDOW,
                                      SAMPLES_PER_FRAME, VSHIFT, SyncResult, audio_to_int16, embed,
                                      evaluate, full_frames, mfcc_features, num_windows,
                                      offset_distances, sync_scores, syncnet_crops)
from metrics.syncnet.jpeg import FRAME_PATHS, encoder_versions, encode_jpegs, jpeg_roundtrip
from metrics.syncnet.metrics import (CROPS, EXPERT_WEIGHTS, AVOffset, LSEC, LSED, clear_cache)
from metrics.syncnet.net import (EMBEDDING_DIM, EXPERT_ARCH_KEYS, EXPERT_FORMAT, Embedder, S,
                                 SyncNet, load_syncnet, read_expert_config, save_expert)

__all__ = [
    "CPU_BATCH", "CROP_SIZE", "CUDA_BATCH", "DIST_EPS", "FPS", "FRAMES_PER_WINDOW", "MFCC_PER_FRAME",
    "MFCC_PER_WINDOW", "SAMPLES_PER_FRAME", "VSHIFT", "SyncResult", "audio_to_int16", "embed",
    "evaluate", "full_frames", "mfcc_features", "num_windows", "offset_distances", "sync_scores",
    "syncnet_crops",
    "FRAME_PATHS", "encoder_versions", "encode_jpegs", "jpeg_roundtrip",
    "CROPS", "EXPERT_WEIGHTS", "AVOffset", "LSEC", "LSED", "clear_cache",
    "EMBEDDING_DIM", "EXPERT_ARCH_KEYS", "EXPERT_FORMAT", "Embedder", "S", "SyncNet", "load_syncnet",
    "read_expert_config", "save_expert",
]
