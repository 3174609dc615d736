"""Tiny random-weight IndexTTS2 models in the real file formats and folder layouts, for tests.

Every component is built with the `indextts` package's (or transformers') own classes and
saved as the release files are: the model folder (`config.yaml`, `gpt.pth`, `s2mel.pth`,
`bpe.model`, `wav2vec2bert_stats.pt`, `feat1.pt`, `feat2.pt`, `qwen0.6bemo4-merge/`) and a
folder for each hub model (`w2v-bert-2.0/`, `MaskGCT/semantic_codec/model.safetensors`,
`campplus/campplus_cn_common.bin`, `bigvgan/`), here inside the model folder where the
engine looks by default. Widths that upstream hard-codes stay real (the GPT's 1280, w2v-bert's
1024 with the 17 layers whose output upstream reads, CAM++'s 192-dim style); everything else
is as small as the classes allow. Every parameter is random: a model that outputs zeros would
make any two paths look equal.
"""

from __future__ import annotations

import json
from pathlib import Path

from f5_tiny import write_reference  # the same speech-like test signal

REF_TEXT = "This is my voice."
EMO_NUM = [1, 2, 1, 1, 1, 1, 1, 2]
CODEBOOK = 64  # semantic codes; the GPT's mel vocabulary is this + start + stop

CONFIG = {
    "dataset": {"bpe_model": "bpe.model", "sample_rate": 24000, "squeeze": False},
    "gpt": {
        "model_dim": 1280, "max_mel_tokens": 60, "max_text_tokens": 120, "heads": 20, "use_mel_codes_as_input": True,
        "mel_length_compression": 1024, "layers": 1, "number_text_tokens": 256, "number_mel_codes": CODEBOOK + 2,
        "start_mel_token": CODEBOOK, "stop_mel_token": CODEBOOK + 1, "start_text_token": 0, "stop_text_token": 1,
        "train_solo_embeddings": False, "condition_type": "conformer_perceiver",
        "condition_module": {"output_size": 32, "linear_units": 64, "attention_heads": 2, "num_blocks": 1,
                             "input_layer": "conv2d2", "perceiver_mult": 2},
        "emo_condition_module": {"output_size": 32, "linear_units": 64, "attention_heads": 2, "num_blocks": 1,
                                 "input_layer": "conv2d2", "perceiver_mult": 2},
    },
    "semantic_codec": {"codebook_size": CODEBOOK, "hidden_size": 1024, "codebook_dim": 8, "vocos_dim": 32,
                       "vocos_intermediate_dim": 64, "vocos_num_layers": 1},
    "s2mel": {
        "preprocess_params": {"sr": 22050, "spect_params": {"n_fft": 1024, "win_length": 1024, "hop_length": 256,
                                                            "n_mels": 80, "fmin": 0, "fmax": "None"}},
        "dit_type": "DiT", "reg_loss_type": "l1", "style_encoder": {"dim": 192},
        "length_regulator": {"channels": 32, "is_discrete": False, "in_channels": 1024, "content_codebook_size": 2048,
                             "sampling_ratios": [1, 1, 1, 1], "vector_quantize": False, "n_codebooks": 1,
                             "quantizer_dropout": 0.0, "f0_condition": False, "n_f0_bins": 512},
        "DiT": {"hidden_dim": 32, "num_heads": 2, "depth": 3, "class_dropout_prob": 0.1, "block_size": 8192,
                "in_channels": 80, "style_condition": True, "final_layer_type": "wavenet", "target": "mel",
                "content_dim": 32, "content_codebook_size": 1024, "content_type": "discrete", "f0_condition": False,
                "n_f0_bins": 512, "content_codebooks": 1, "is_causal": False, "long_skip_connection": True,
                "zero_prompt_speech_token": False, "time_as_token": False, "style_as_token": False,
                "uvit_skip_connection": True, "add_resblock_in_transformer": False},
        "wavenet": {"hidden_dim": 32, "num_layers": 2, "kernel_size": 5, "dilation_rate": 1, "p_dropout": 0.2,
                    "style_condition": True},
    },
    "gpt_checkpoint": "gpt.pth",
    "w2v_stat": "wav2vec2bert_stats.pt",
    "s2mel_checkpoint": "s2mel.pth",
    "emo_matrix": "feat2.pt",
    "spk_matrix": "feat1.pt",
    "emo_num": EMO_NUM,
    "qwen_emo_path": "qwen0.6bemo4-merge/",
    "vocoder": {"type": "bigvgan", "name": "bigvgan"},
    "version": 2.0,
}  # fmt: skip

BIGVGAN = {
    "resblock": "1", "upsample_rates": [4, 4, 2, 2, 2, 2], "upsample_kernel_sizes": [8, 8, 4, 4, 4, 4],
    "upsample_initial_channel": 64, "resblock_kernel_sizes": [3], "resblock_dilation_sizes": [[1, 3]],
    "use_tanh_at_final": False, "use_bias_at_final": False, "activation": "snakebeta", "snake_logscale": True,
    "num_mels": 80, "num_freq": 1025, "n_fft": 1024, "hop_size": 256, "win_size": 1024, "sampling_rate": 22050,
    "fmin": 0, "fmax": None, "fmax_for_loss": None,
}  # fmt: skip

W2V_BERT = dict(hidden_size=1024, num_hidden_layers=17, num_attention_heads=16, intermediate_size=8,
                conv_depthwise_kernel_size=3, feature_projection_input_dim=160)  # fmt: skip

def build(root: Path | None = None, seed: int = 0) -> dict[str, Path]:
    """The tiny model folder, written once. By default it is kept between test sessions under
    the user's cache folder, named by a hash of what builds it (about 45 s to write on two cores);
    it is written beside and renamed into place, so parallel sessions never see half of one."""
    import hashlib
    import inspect
    import os
    import shutil

    from ishowttsd.engines.indextts import bench

    if root is None:
        src = (Path(__file__).read_text() + inspect.getsource(bench.random_model) + inspect.getsource(bench.random_qwen)).encode()
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ishowttsd-tests"
        root = cache / f"indextts-tiny-{hashlib.sha256(src).hexdigest()[:12]}-{seed}"
    paths = _paths(root)
    if not (root / ".complete").exists():
        tmp = root.with_name(f"{root.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        bench.random_model(tmp, CONFIG, W2V_BERT, BIGVGAN, seed=seed, half_gpt=True)
        write_reference(tmp / "ref.wav")
        write_reference(tmp / "emo.wav", seconds=1.0, seed=7)
        (tmp / ".complete").write_text("ok")
        try:
            tmp.rename(root)
        except OSError:  # another session finished first
            shutil.rmtree(tmp, ignore_errors=True)
    return paths


def _paths(root: Path) -> dict[str, Path]:
    return {"dir": root, "config": root / "config.yaml", "gpt": root / "gpt.pth", "s2mel": root / "s2mel.pth",
            "bpe": root / "bpe.model", "w2v": root / "w2v-bert-2.0", "maskgct": root / "MaskGCT",
            "campplus": root / "campplus", "bigvgan": root / "bigvgan", "qwen": root / "qwen0.6bemo4-merge",
            "ref": root / "ref.wav", "emo_ref": root / "emo.wav"}  # fmt: skip


def engine_table(paths: dict[str, Path], **extra) -> str:
    """An `[engine.indextts]` TOML table for the tiny model."""
    lines = ["[engine.indextts]", f'model_dir = "{paths["dir"]}"', "normalize = false"]
    for k, v in extra.items():
        lines.append(f"{k} = {json.dumps(v)}")
    return "\n".join(lines) + "\n"
