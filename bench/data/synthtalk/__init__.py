"""synthtalk: the deterministic synthetic talking-face corpus embedded in talkbench.

Real espeak-ng speech with phoneme timings (`speech`), a 68-point face animated by visemes,
emotions, blinks and head pose with exact ground truth (`face`), frames drawn from the landmarks
that dlib's detector and predictor handle like a real face (`render`), the seeded, resumable
corpus on disk (`corpus`) and a contact sheet / video preview (`preview`).

    from bench.data.synthtalk import corpus
    clips = corpus.load_clips(corpus.build())   # 12 speakers x 8 clips, frames rendered lazily
"""
