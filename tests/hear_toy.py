"""A small HEAR-API module for the tests of the ``hear`` embedder (not a real model).

16 kHz; timestamp embeddings: a fixed linear map (400 samples -> 6) of 25 ms windows every 10 ms,
centred on their timestamps (milliseconds, as the API says); scene embedding: their mean. The
map is seeded, or read from a ``.npy`` model file when one is given.
"""
import numpy as np
import torch

__version__ = "0.3.1"

WINDOW, HOP, DIM = 400, 160, 6


class ToyModel(torch.nn.Module):
    sample_rate = 16000
    scene_embedding_size = DIM
    timestamp_embedding_size = DIM

    def __init__(self, weights):
        super().__init__()
        self.proj = torch.from_numpy(np.asarray(weights, dtype=np.float32))


def load_model(model_file_path: str = "") -> ToyModel:
    if model_file_path:
        return ToyModel(np.load(model_file_path))
    return ToyModel(np.random.default_rng(7).standard_normal((WINDOW, DIM)) / 20)


def get_timestamp_embeddings(audio: torch.Tensor, model: ToyModel):
    n = audio.shape[1]
    padded = torch.nn.functional.pad(audio, (WINDOW // 2, WINDOW // 2))
    frames = padded.unfold(1, WINDOW, HOP)[:, : 1 + n // HOP]  # (sounds, t, 400)
    emb = torch.tanh(frames @ model.proj)
    stamps = torch.arange(emb.shape[1], dtype=torch.float32) * (1000.0 * HOP / 16000)
    return emb, stamps[None, :].expand(audio.shape[0], -1)


def get_scene_embeddings(audio: torch.Tensor, model: ToyModel) -> torch.Tensor:
    emb, _ = get_timestamp_embeddings(audio, model)
    return emb.mean(dim=1)
