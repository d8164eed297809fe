"""A tiny randomly initialised AudioLDM pipeline, built from small configs and a tokenizer written
from a 59-token vocabulary (nothing downloaded): it stands in for ``cvssp/audioldm-s-full-v2`` in
the text query tests (``recommend --text`` and the ``serve`` page)."""
import json
from pathlib import Path

#: The tiny vocoder: 256 samples per spectrogram frame at 16 kHz.
SR, HOP = 16000, 256


def build_tiny_audioldm(folder: Path) -> Path:
    """A randomly initialised ``AudioLDMPipeline`` saved with ``save_pretrained`` in ``folder``
    (a few thousand parameters: generation of a second of audio takes well under a second)."""
    import torch
    from diffusers import AudioLDMPipeline, AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import (ClapTextConfig, ClapTextModelWithProjection, RobertaTokenizer,
                              SpeechT5HifiGan, SpeechT5HifiGanConfig)

    torch.manual_seed(0)
    # AudioLDM conditions the UNet on the CLAP text projection through the class embedding
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
        mid_block_type="UNetMidBlock2D", norm_num_groups=4, cross_attention_dim=16,
        class_embed_type="simple_projection", projection_class_embeddings_input_dim=16,
        class_embeddings_concat=True)
    vae = AutoencoderKL(in_channels=1, out_channels=1, latent_channels=4, block_out_channels=(8, 16),
                        down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1,
                        norm_num_groups=4)
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"] + list(letters + ",.") + \
        ["\u0120" + c for c in letters]  # \u0120: byte-level BPE's "preceded by a space"
    vocab_dir = folder.parent / (folder.name + "_vocab")
    vocab_dir.mkdir(parents=True, exist_ok=True)
    (vocab_dir / "vocab.json").write_text(json.dumps({w: i for i, w in enumerate(words)}))
    (vocab_dir / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = RobertaTokenizer(vocab_file=str(vocab_dir / "vocab.json"),
                                 merges_file=str(vocab_dir / "merges.txt"), model_max_length=16)
    text_encoder = ClapTextModelWithProjection(ClapTextConfig(
        vocab_size=len(words), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, projection_dim=16, max_position_embeddings=24, pad_token_id=1))
    vocoder = SpeechT5HifiGan(SpeechT5HifiGanConfig(
        model_in_dim=32, sampling_rate=SR, upsample_initial_channel=16, upsample_rates=[8, 8, 4],
        upsample_kernel_sizes=[16, 16, 8], resblock_kernel_sizes=[3],
        resblock_dilation_sizes=[[1, 3]], normalize_before=False))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False)
    AudioLDMPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                     scheduler=scheduler, vocoder=vocoder).save_pretrained(str(folder))
    return folder
