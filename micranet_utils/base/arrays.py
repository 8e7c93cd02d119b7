"""Array arguments of the public functions: NumPy or PyTorch, converted and checked once."""

import numpy as np


def to_numpy(array, name, ndim, dtype=np.float32):
    """`array` (ndarray, nested list or Tensor, on any device) as an ndarray of `dtype`.

    Parameters
    ----------
    array : array-like, Tensor or None
        None is returned unchanged.
    name : str
        How error messages call the argument, with its axes, e.g. ``"maps (B, C, 8, H, W)"``.
    ndim : int
        The number of dimensions it must have.
    dtype : numpy dtype

    Raises
    ------
    ValueError
        When the number of dimensions differs.
    """
    if array is None:
        return None
    if hasattr(array, "detach"):
        array = array.detach().cpu().numpy()
    array = np.asarray(array, dtype)
    if array.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions; got shape {array.shape}")
    return array
