"""FD2Talk: alignment mask, DDIM x0 sampling, lip expert, overfitting, checkpoints, seeds, paper sizes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from baselines import available_methods, build_method
from baselines.fd2talk import (FD2Talk, FD2TalkConfig, MOUTH_POINTS, Stage1, Stage2, mouth_points, schedulers,
                               fit_landmark_pca, landmark_pca_coefficients)
from baselines.fd2talk.model import (LipExpert, MotionDiT, TwoConditionProcessor, alignment_mask,
                                     decode_with_reference, sync_loss)
from core.types import Clip, MethodInput

# a one-clip budget: 32 px frames (8 x 8 latents), short step counts
SMALL = dict(image_size=32, motion_steps=80, expert_steps=40, vae_steps=20, decoder_steps=20, unet_steps=50,
             unet_batch=8, image_batch=8, motion_batch=8, ddim_steps_motion=4, ddim_steps_frames=3,
             fe_hidden=16, fe_num_layers=1, fe_conv_dim=8, d_model=32, ff=64, layers=1)


# tiny models run fastest on one intra-op thread (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def clips(talkbench_home) -> list[Clip]:
    from bench.data.synthtalk import corpus

    return corpus.load_clips(corpus.build(size=2))


@pytest.fixture(scope="module")
def fitted(clips):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        method = build_method("fd2talk", "tiny", SMALL)
        method.fit(clips[:1], [], seed=0)
    finally:
        torch.set_num_threads(before)  # a module fixture: the autouse one does not restore it
    return method


def test_registered_variants_and_presets():
    names = set(available_methods())
    assert {"fd2talk", *FD2Talk.ablations} <= names
    assert FD2Talk.ablations == ("fd2talk_single_dit", "fd2talk_concat_cond", "fd2talk_no_align", "fd2talk_no_sync")
    flags = {n: build_method(n).config for n in FD2Talk.ablations}
    assert flags["fd2talk_single_dit"].single_dit and flags["fd2talk_concat_cond"].concat_cond
    assert not flags["fd2talk_no_align"].align and not flags["fd2talk_no_sync"].use_sync
    paper = FD2TalkConfig.preset("paper")
    assert (paper.layers, paper.window, paper.align_k, paper.ddim_steps_motion, paper.ddim_steps_frames,
            paper.train_timesteps, paper.vae, paper.image_size) == (6, 25, 3, 50, 50, 1000, "sd", 256)


def test_alignment_mask_pattern_and_effect():
    mask = alignment_mask(8, 8, 3)
    for i in range(8):
        for j in range(8):
            assert bool(mask[i, j]) == (abs(i - j) <= 3)
    torch.manual_seed(0)
    for align in (True, False):
        dit = MotionDiT(5, 6, d_model=16, layers=1, heads=2, ff=32, max_len=25, k=3, align=align).eval()
        x, t, audio = torch.randn(1, 20, 5), torch.tensor([500]), torch.randn(1, 20, 6)
        changed = audio.clone()
        changed[0, 15] += 5.0  # audio of frame 15 only
        with torch.no_grad():
            diff = (dit(x, t, audio) - dit(x, t, changed)).abs().amax(-1)[0]
        far = [i for i in range(20) if abs(i - 15) > 3]
        near = [i for i in range(20) if abs(i - 15) <= 3]
        assert diff[near].min() > 1e-5
        if align:  # one layer: frame i only hears audio frames within k
            assert diff[far].max() < 1e-6
        else:
            assert diff[far].min() > 1e-5


def test_ddim_sample_prediction_recovers_x0_with_a_perfect_denoiser():
    cfg = FD2TalkConfig.preset("tiny", ddim_steps_motion=10)
    train, sched = schedulers(cfg)
    assert sched.config.prediction_type == "sample" and train.config.num_train_timesteps == 1000
    sched.set_timesteps(cfg.ddim_steps_motion)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, 25, 7, generator=gen)
    x = torch.randn(2, 25, 7, generator=gen)
    for t in sched.timesteps:
        x = sched.step(x0, t, x).prev_sample
    torch.testing.assert_close(x, x0, atol=1e-4, rtol=1e-4)
    wrong = torch.zeros_like(x0)
    x = torch.randn(2, 25, 7, generator=gen)
    for t in sched.timesteps:
        x = sched.step(wrong, t, x).prev_sample
    assert (x - x0).abs().mean() > 0.5  # the result follows the denoiser, not the start


def test_lip_expert_separates_aligned_from_shifted_on_held_out_clips(clips):
    m = build_method("fd2talk", "tiny", {"expert_steps": 250})
    spf = clips[0].sample_rate / clips[0].fps
    mouths = [torch.as_tensor(mouth_points(c)) for c in clips]
    mfccs = [m._mfcc_frames(c.audio, spf, c.num_frames) for c in clips]
    train_ids = [i for i, c in enumerate(clips) if c.speaker not in {clips[-1].speaker, clips[-3].speaker}]
    test_ids = [i for i in range(len(clips)) if i not in train_ids]
    expert = m._fit_expert([mouths[i] for i in train_ids], [mfccs[i] for i in train_ids], 0, "cpu")
    E = m.config.expert_window
    aligned, shifted = [], []
    with torch.no_grad():
        for i in test_ids:
            n = len(mouths[i])
            for s in range(0, n - E - 8, 3):
                mw = (mouths[i][s:s + E] - expert.mouth_mean)[None]
                aligned.append(float(expert.p_sync(mw, mfccs[i][s:s + E][None])))
                shifted.append(float(expert.p_sync(mw, mfccs[i][s + 8:s + 8 + E][None])))
    print(f"held-out P_sync aligned {np.mean(aligned):.3f} shifted {np.mean(shifted):.3f}")
    assert np.mean(aligned) > np.mean(shifted) + 0.1
    assert sync_loss(torch.tensor(aligned)) < sync_loss(torch.tensor(shifted))


def test_one_clip_overfit_of_each_stage(fitted):
    log = fitted.train_log
    print(log)
    assert log["expert"]["last_mean"] < 0.8 * log["expert"]["first"]
    assert log["motion"]["last_mean"][0] < 0.6 * log["motion"]["first"][0]  # L_exp
    assert log["motion"]["last_mean"][1] < 0.6 * log["motion"]["first"][1]  # L_pose
    assert log["vae"]["last_mean"] < 0.8 * log["vae"]["first"]
    assert log["decoder"]["last_mean"] < log["decoder"]["first"]
    assert log["unet"]["last_mean"] < 0.5 * log["unet"]["first"]


def test_predicts_frames_pose_motion_and_same_seed_same_samples(fitted, clips):
    inp = MethodInput.from_clip(clips[0], fitted.inputs)
    a, b = fitted.predict(inp), fitted.predict(inp)
    assert a.frames.shape == clips[0].frames.shape and a.frames.dtype == np.uint8
    assert a.pose.shape == (clips[0].num_frames, 6) and a.motion.shape == clips[0].motion.shape
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.pose, b.pose)
    other = build_method("fd2talk", "tiny", {**SMALL, "sample_seed": 1})
    other.set_state(fitted.state())
    assert not np.array_equal(other.predict(inp).pose, a.pose)


def test_checkpoint_round_trip(fitted, clips, tmp_path):
    path = tmp_path / "fd2talk.ckpt"
    fitted.save(path)
    loaded = FD2Talk.load(path)
    inp = MethodInput.from_clip(clips[0], fitted.inputs)
    np.testing.assert_array_equal(loaded.predict(inp).frames, fitted.predict(inp).frames)
    with pytest.raises(ValueError):
        build_method("fd2talk", "tiny", SMALL).set_state({"stage1.beta_mean": np.zeros(3, np.float32)})


def test_fit_refuses_clips_without_motion(clips):
    import dataclasses

    bare = dataclasses.replace(clips[0], motion=None)
    with pytest.raises(ValueError, match="motion backend"):
        build_method("fd2talk", "tiny", {**SMALL, "motion_backend": "given"}).fit([bare], [])
    with pytest.raises(ValueError, match="pose backend"):
        build_method("fd2talk", "tiny", SMALL).fit([dataclasses.replace(clips[0], pose=None)], [])


def test_landmark_pca_backend_ignores_similarity_and_follows_the_mouth(clips):
    pca = fit_landmark_pca(clips[:6], 8)
    lmk = clips[7].landmarks.astype(np.float64)
    beta = landmark_pca_coefficients(lmk, pca)
    angle = np.deg2rad(12.0)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    moved = 1.7 * lmk @ rot.T + np.array([30.0, -12.0])
    np.testing.assert_allclose(landmark_pca_coefficients(moved, pca), beta, atol=1e-3)
    opened = lmk.copy()
    opened[:, 57] += [0.0, 6.0]  # lower lip down
    assert np.abs(landmark_pca_coefficients(opened, pca) - beta).max() > 0.1


def test_two_condition_processor_uses_both_conditions():
    from diffusers.models.attention_processor import Attention

    torch.manual_seed(0)
    attn = Attention(16, cross_attention_dim=8, heads=2, dim_head=8)
    for separate in (True, False):
        attn.set_processor(TwoConditionProcessor(16, 8, n_motion=2, separate=separate))
        h, cond = torch.randn(1, 5, 16), torch.randn(1, 6, 8)
        for part in (slice(0, 2), slice(2, 6)):
            moved = cond.clone()
            moved[:, part] += 1.0
            assert (attn(h, moved) - attn(h, cond)).abs().max() > 1e-4
    assert any(n.endswith("to_k2.weight") for n, _ in
               torch.nn.Module.named_parameters(Stage2(FD2TalkConfig.preset("tiny"), 22).denoiser))


def test_paper_preset_one_training_step_of_each_network():
    """Paper sizes (L = 6 DiTs of width 512, SD VAE architecture with the widened decoder, the UNet),
    random-initialised (a small random wav2vec2 in place of the pretrained one), batch 1 on CPU."""
    cfg = FD2TalkConfig.preset("paper", pretrained=None, freeze="none")
    torch.manual_seed(0)
    s1 = Stage1(cfg, 16, 6)
    assert len(s1.exp_dit.blocks) == 6 and len(s1.pose_dit.blocks) == 6
    expert = LipExpert(len(MOUTH_POINTS), 39, cfg.expert_window, cfg.expert_hidden, cfg.expert_embed)
    train, _ = schedulers(cfg)
    x0, audio = torch.randn(1, 25, 22), torch.randn(1, 25 * 640)
    t = torch.tensor([300])
    pred = s1.denoise(train.add_noise(x0, torch.randn_like(x0), t), t, s1.frontend(audio, 25))
    mouth = s1.mouth(pred[0, :5, :16])[None]
    loss = torch.nn.functional.mse_loss(pred, x0) + sync_loss(expert.p_sync(mouth, torch.randn(1, 5, 39)))
    loss.backward()
    assert s1.exp_dit.blocks[0].cross_attn.in_proj_weight.grad is not None
    s2 = Stage2(cfg, 22)
    assert s2.vae.decoder.conv_in.in_channels == 8 and tuple(s2.vae.config.block_out_channels) == (128, 256, 512, 512)
    ref, j0 = torch.randn(1, 4, 32, 32), torch.randn(1, 4, 32, 32)
    out = s2.denoiser(train.add_noise(j0, torch.randn_like(j0), t), t, torch.randn(1, 22), ref)
    torch.nn.functional.mse_loss(out, j0).backward()
    assert out.shape == j0.shape
    s2.vae.decoder.requires_grad_(True)  # the decoder step on 8 x 8 latents (64 px) to keep the test short
    img = decode_with_reference(s2.vae, j0[..., :8, :8], ref[..., :8, :8], s2.scaling)
    assert img.shape == (1, 3, 64, 64)
    img.mean().backward()
    assert s2.vae.decoder.conv_in.weight.grad[:, 4:].abs().sum() > 0


def test_deep3d_backend_names_its_files_and_loads_a_random_network_and_basis(clips, tmp_path):
    from scipy.io import savemat

    from baselines.fd2talk.deep3d import Deep3DBackend, Deep3DUnavailable, ReconNet

    with pytest.raises(Deep3DUnavailable, match="epoch_20.pth.*BFM_model_front.mat"):
        Deep3DBackend(tmp_path)
    torch.manual_seed(0)
    torch.save({"net_recon": ReconNet().state_dict()}, tmp_path / "epoch_20.pth")
    rng = np.random.default_rng(0)
    n = 3 * 68  # a tiny random basis: 68 vertices, the keypoints are all of them (1-based)
    savemat(tmp_path / "BFM_model_front.mat", {"meanshape": rng.normal(size=(1, n)), "idBase": rng.normal(size=(n, 80)),
                                               "exBase": rng.normal(size=(n, 64)),
                                               "keypoints": np.arange(1, 69)[None]})
    backend = Deep3DBackend(tmp_path)
    clip = clips[0]
    coeffs = backend.coefficients(clip.frames[:3], clip.landmarks[:3])
    assert coeffs["beta"].shape == (3, 64) and coeffs["pose"].shape == (3, 6) and coeffs["id"].shape == (3, 80)
    mouth = backend.mouth_vertices(coeffs["id"], coeffs["beta"])
    assert mouth.shape == (3, 20, 3) and np.isfinite(mouth).all()
    torch.save({"net_recon": {"backbone.conv1.weight": torch.zeros(1)}}, tmp_path / "epoch_20.pth")
    with pytest.raises(Deep3DUnavailable, match="not a Deep3DFaceRecon"):
        Deep3DBackend(tmp_path)
