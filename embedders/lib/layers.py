"""The ``layer`` option of embedders that give one space per layer (hf-audio, musicnn, clamp2).

A ``layer`` value is one layer (an index or a name, as each model numbers or names them),
``"all"``, or a list of layers (``--set hf-audio.layer=2,4,6`` on the command line; a list or
tuple in Python). One layer gives one space named after the embedder, exactly as before. ``all``
or a list gives one space per layer, ``NAME@LAYER`` (e.g. ``hf-audio@6``), in the order asked
(``all``: the network's order), all from one forward pass per file; each space is keyed in the
cache like the single-layer embedder that would compute it alone, so the two share entries.

Pure Python (no torch): constructing an embedder stays cheap.
"""
from __future__ import annotations

from typing import Any

from ..base import SPACE_SEPARATOR, ConfigurationError, Embedding

#: The ``layer`` value asking for every layer of the model.
ALL = "all"


def _token(text: str) -> Any:
    """One layer given as text: an integer index when it reads as one, else the name."""
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        return text


def parse_layers(value: Any) -> Any:
    """Normalise a ``layer`` value: ``None``, one layer (int or str), :data:`ALL`, or a tuple.

    Text with commas (``"2,4,6"``) and lists become tuples; a text that reads as an integer
    becomes that integer. Whether each layer exists is for the embedder to say.

    Raises
    ------
    ConfigurationError
        An empty list, an empty or repeated layer, or a value that is no layer at all (one line).
    """
    if value is None or isinstance(value, bool):
        return value  # a bool is refused by the embedder's own check, with its own message
    if isinstance(value, str):
        word = value.strip()
        if word.lower() == ALL:
            return ALL
        if "," not in word:
            return _token(word) if word else word
        value = [t for t in word.split(",")]
    if isinstance(value, (list, tuple)):
        layers = tuple(_token(v) if isinstance(v, str) else v for v in value)
        if not layers or any(v == "" or v is None or isinstance(v, bool) for v in layers):
            raise ConfigurationError(f"layer list {value!r} has an empty entry")
        repeated = sorted({str(v) for v in layers if layers.count(v) > 1})
        if repeated:
            raise ConfigurationError(f"layer list {value!r} repeats {', '.join(repeated)}")
        return layers
    return value


def several(value: Any) -> bool:
    """Whether a (parsed) ``layer`` value asks for several spaces (``all`` or a list)."""
    return value == ALL or isinstance(value, tuple)


class LayerSpaces:
    """Mix-in (before :class:`~embedders.base.Embedder`) for an embedder whose ``layer`` option
    may name several layers: one space per layer from one computation.

    The embedder implements :meth:`selected_layers` (the layers asked for, in order; it may
    load the model to know them) and :meth:`_embed_layers` (every selected layer's embedding
    of one file, from one forward pass); it may override :meth:`layer_cache_options`.
    """

    @classmethod
    def coerce_option(cls, name: str, text: str) -> Any:
        if name == "layer":
            if cls.option_defaults["layer"] is None and text.strip().lower() in ("none", "null"):
                return None
            return parse_layers(text)
        return super().coerce_option(name, text)

    @property
    def several_layers(self) -> bool:
        """Whether this embedder gives one space per layer (``layer`` is ``all`` or a list)."""
        return several(self.options["layer"])

    def selected_layers(self) -> list:
        """The layers asked for, in order (``all``: every layer, in the network's order)."""
        raise NotImplementedError

    def layer_cache_options(self, base: dict, layer: Any) -> dict:
        """Cache options of one layer's space: those of the single-layer embedder computing it
        alone (``base``: this embedder's :meth:`cache_options`)."""
        return {**base, "layer": layer}

    def space_layers(self) -> dict[str, Any]:
        if not self.several_layers:
            return {}
        return {f"{self.name}{SPACE_SEPARATOR}{layer}": layer for layer in self.selected_layers()}

    def spaces(self) -> dict[str, dict]:
        if not self.several_layers:
            return super().spaces()
        base = self.cache_options()
        return {space: self.layer_cache_options(base, layer)
                for space, layer in self.space_layers().items()}

    def _embed_layers(self, path: str) -> dict[Any, Embedding]:
        """Layer -> embedding of one file for every selected layer, from one forward pass."""
        raise NotImplementedError

    def _embed_file_spaces(self, path: str) -> dict[str, Embedding]:
        if not self.several_layers:
            return super()._embed_file_spaces(path)
        by_layer = self._embed_layers(path)
        return {space: by_layer[layer] for space, layer in self.space_layers().items()}

    def refuse_several(self) -> None:
        """Raise for a one-space call (``compute``, ``embed``) on an embedder giving several."""
        if self.several_layers:
            raise ConfigurationError(
                f"{self.name} layer={self.options['layer']!r} gives one space per layer "
                f"({', '.join(self.space_layers())}): use compute_spaces()")
