"""Facts shared by every layer, defined once."""

from __future__ import annotations

# iBUG-68 index groups (dlib / imutils order).
JAW = tuple(range(0, 17))
MOUTH = tuple(range(48, 68))
FACE = tuple(range(0, 68))
RIGHT_EYE_OUTER, LEFT_EYE_OUTER = 36, 45
NUM_LANDMARKS = 68

# Audio sample rate of every clip, method input and metric (Hz).
SAMPLE_RATE = 16000

# MEAD's eight emotions. The order is the index order of emotion embeddings (methods) and of
# synthtalk's expression table; dataset adapters map their own codes onto these names.
EMOTIONS: tuple[str, ...] = ("neutral", "angry", "contempt", "disgusted", "fear", "happy", "sad",
                             "surprised")
