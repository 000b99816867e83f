"""Loading a saved model, with errors that name what is wrong with the file."""

import zipfile
from pathlib import Path

import keras

__all__ = ["load_model"]


def load_model(path, **kwargs) -> keras.Model:
    """`keras.saving.load_model` for a `.keras` file, refusing first one that cannot be complete.

    A truncated or corrupt `.keras` archive is not a zip file, and Keras then falls back to
    its legacy loaders, which report "File not found" for a file that exists; this says what
    is wrong instead.

    Arguments:
        path: a `.keras` file saved by `model.save`.
        **kwargs: as for `keras.saving.load_model` (custom_objects, compile, safe_mode).
    Raises:
        FileNotFoundError: no file at `path`.
        ValueError: the file is not a complete `.keras` archive.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if path.suffix == ".keras" and not zipfile.is_zipfile(path):
        raise ValueError(
            f"{path} is not a complete .keras archive (truncated or corrupt, "
            f"{path.stat().st_size} bytes); save the model again or use another copy"
        )
    return keras.saving.load_model(path, **kwargs)
