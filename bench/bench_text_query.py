"""How slow is a text query on this CPU? Generation time of ``recommend --text`` with a randomly
initialised pipeline of AudioLDM-S's size (no weights are downloaded: the time depends on the
architecture, not on the weights' values), and the cache hit of the same request.

The architecture is rebuilt from the published AudioLDM-S description (UNet widths
128-256-384-640 with attention in the three deeper levels, 8 latent channels, a 4x VAE, the
CLAP text encoder (RoBERTa-base sized), a 16 kHz HiFi-GAN with 160x upsampling); its UNet
parameter count is printed to compare with the paper's 181M. The real checkpoint
``cvssp/audioldm-s-full-v2`` computes the same operations, so its CPU time should be close.
Usage: ``python bench/bench_text_query.py [--seconds 5] [--steps 10] [--threads N]``
"""
import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe_cpu  # noqa: E402


def build_audioldm_s_sized(folder: Path) -> Path:
    import torch
    from diffusers import AudioLDMPipeline, AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import (ClapTextConfig, ClapTextModelWithProjection, RobertaTokenizer,
                              SpeechT5HifiGan, SpeechT5HifiGanConfig)
    import json

    torch.manual_seed(0)
    widths = (128, 256, 384, 640)
    unet = UNet2DConditionModel(
        sample_size=256, in_channels=8, out_channels=8, layers_per_block=2,
        block_out_channels=widths, attention_head_dim=8, cross_attention_dim=widths,
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * 3,
        up_block_types=("CrossAttnUpBlock2D",) * 3 + ("UpBlock2D",),
        class_embed_type="simple_projection", projection_class_embeddings_input_dim=512,
        class_embeddings_concat=True)
    vae = AutoencoderKL(in_channels=1, out_channels=1, latent_channels=8,
                        block_out_channels=(128, 256, 512), layers_per_block=2,
                        down_block_types=("DownEncoderBlock2D",) * 3,
                        up_block_types=("UpDecoderBlock2D",) * 3)
    words = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"] + [chr(c) for c in range(97, 123)] + \
        ["\u0120" + chr(c) for c in range(97, 123)]
    (folder.parent / "vocab.json").write_text(json.dumps({w: i for i, w in enumerate(words)}))
    (folder.parent / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = RobertaTokenizer(vocab_file=str(folder.parent / "vocab.json"),
                                 merges_file=str(folder.parent / "merges.txt"),
                                 model_max_length=77)
    text = ClapTextModelWithProjection(ClapTextConfig(vocab_size=50265, projection_dim=512))
    vocoder = SpeechT5HifiGan(SpeechT5HifiGanConfig(
        model_in_dim=64, sampling_rate=16000, upsample_initial_channel=1024,
        upsample_rates=[5, 4, 2, 2, 2], upsample_kernel_sizes=[16, 16, 8, 4, 4],
        resblock_kernel_sizes=[3, 7, 11], resblock_dilation_sizes=[[1, 3, 5]] * 3,
        normalize_before=False))
    print(f"UNet parameters: {sum(p.numel() for p in unet.parameters()) / 1e6:.0f}M "
          f"(AudioLDM-S: 181M)", flush=True)
    AudioLDMPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet,
                     scheduler=DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.0015,
                                             beta_end=0.0195, clip_sample=False,
                                             set_alpha_to_one=False),
                     vocoder=vocoder).save_pretrained(str(folder))
    return folder


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    print(describe_cpu(), f"torch threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["EMBCOMPARE_CACHE_DIR"] = str(Path(tmp) / "cache")
        from search import text_query as tq

        folder = build_audioldm_s_sized(Path(tmp) / "pipe")
        kw = dict(model=str(folder), seconds=args.seconds, steps=args.steps, seed=0, device="cpu")
        t0 = time.perf_counter()
        tq.text_query_audio("calm solo piano, slow", **kw)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        tq.text_query_audio("calm solo piano, slow", **kw)
        again = time.perf_counter() - t0
    print(f"generate {args.seconds:g} s of audio, {args.steps} steps: {first:.1f} s "
          f"({first / args.seconds:.1f} s per second of audio); same request again (cache): "
          f"{again:.3f} s; ratio {first / max(again, 1e-9):.0f}x")


if __name__ == "__main__":
    main()
