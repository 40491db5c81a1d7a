"""`QKData`: the validated arrays of one model's QK operators (the seed's input format).

For layer ``L`` and query head ``h`` the QK operator is ``g = W_K^T W_Q``
(hidden x hidden, rank <= head_dim). The analysis needs, per model:

- ``gram``: (L, L, H) float64, ``gram[L, L', h] = <g_L^h, g_L'^h>_F``;
- ``fro_sq``: (L, H) float64, ``||W_K W_Q^T||_F^2`` as the seed's measure step
  defined it (kept and checked, not used for normalisation: the gram diagonal
  ``||g||_F^2`` is);
- ``eig_dirs``: (L, H, topk, hidden) float32 or float64 as stored, rows are the top-|lambda|
  eigenvectors of the symmetric part ``S = (g + g^T) / 2``;
- ``sym_eigs``: (L, H, 2*head_dim) float64, the nonzero eigenvalues of ``S``
  sorted by ``|lambda|`` descending.
"""

from dataclasses import dataclass, field

import numpy as np

from .checks import positive_int
from .errors import InputError

#: The model's shape: ``L``, ``H``, ``d``, ``n`` (also the JSON keys of the seed's format).
SHAPE_FIELDS = ("num_layers", "num_heads", "head_dim", "hidden_size")

# Relative slack on the Cauchy-Schwarz bound |gram[L, L']| <= ||g_L|| ||g_L'||:
# grams written in float32 by other tools round a little, corrupt ones break it widely.
_CAUCHY_SCHWARZ_SLACK = 1e-5


@dataclass(frozen=True, eq=False)
class QKData:
    """Grams, norms and eigen-data of the QK operators of one model, validated on construction.

    Parameters
    ----------
    num_layers, num_heads, head_dim, hidden_size : int
        Model shape ``L``, ``H``, ``d``, ``n``.
    gram : (L, L, H) array_like
        Frobenius inner products of the operators of two layers, per head.
    fro_sq : (L, H) array_like
        ``||W_K W_Q^T||_F^2`` per layer and head (the seed's definition).
    eig_dirs : (L, H, topk, n) array_like
        Top-k eigenvectors of ``(g + g^T)/2`` as rows, ``1 <= topk <= n``; kept in float32 when
        stored so (float16 is widened to float32), else float64.
    sym_eigs : (L, H, 2 d) array_like
        Nonzero eigenvalues of ``(g + g^T)/2``, sorted by ``|lambda|`` descending.
    json_path, eigdirs_path : str, optional
        Where the arrays came from; error messages name them.
    extra : dict, optional
        Any further metadata (``num_kv_heads``, model name, ...), kept as is.

    Raises
    ------
    InputError
        On any shape disagreement, non-finite value, zero-norm head or a gram
        that cannot be a Gram matrix; the message names the file and the field.
    """

    num_layers: int
    num_heads: int
    head_dim: int
    hidden_size: int
    gram: np.ndarray
    fro_sq: np.ndarray
    eig_dirs: np.ndarray
    sym_eigs: np.ndarray
    json_path: str = "<grams>"
    eigdirs_path: str = "<eigdirs>"
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        for name in SHAPE_FIELDS:
            object.__setattr__(self, name, positive_int(getattr(self, name), self.json_path, name))
        L, H, d, n = self.num_layers, self.num_heads, self.head_dim, self.hidden_size
        gram = self._array("gram", self.gram, self.json_path, (L, L, H), "(num_layers, num_layers, num_heads)")
        fro_sq = self._array("fro_sq", self.fro_sq, self.json_path, (L, H), "(num_layers, num_heads)")
        sym_eigs = self._array("sym_eigs", self.sym_eigs, self.eigdirs_path, (L, H, 2 * d),
                               "(num_layers, num_heads, 2*head_dim)")
        eig_dirs = self._eig_dirs_array()
        if eig_dirs.ndim != 4 or eig_dirs.shape[:2] != (L, H) or eig_dirs.shape[3] != n or not 1 <= eig_dirs.shape[2] <= n:
            raise InputError(self.eigdirs_path, "eig_dirs",
                             f"shape (num_layers={L}, num_heads={H}, topk in 1..{n}, hidden_size={n})",
                             f"{tuple(eig_dirs.shape)}")
        self._check_rows(eig_dirs)
        self._check_gram(gram)
        if (fro_sq < 0).any():
            idx = tuple(int(i) for i in np.argwhere(fro_sq < 0)[0])
            raise InputError(self.json_path, f"fro_sq[{idx[0]}, {idx[1]}]", "a squared norm >= 0", repr(float(fro_sq[idx])))
        silent = ~np.any(sym_eigs != 0, axis=-1)
        if silent.any():
            l, h = (int(i) for i in np.argwhere(silent)[0])
            raise InputError(self.eigdirs_path, f"sym_eigs[{l}, {h}]",
                             "a nonzero spectrum (an operator with a nonzero symmetric part)", "all zeros")
        for name, arr in (("gram", gram), ("fro_sq", fro_sq), ("eig_dirs", eig_dirs), ("sym_eigs", sym_eigs)):
            if arr.flags.writeable:
                arr.setflags(write=False)
            object.__setattr__(self, name, arr)

    @property
    def topk(self):
        """Number of eigenvectors stored per (layer, head)."""
        return self.eig_dirs.shape[2]

    def _array(self, name, value, source, shape, shape_text):
        try:
            # One private contiguous float64 copy, so callers' arrays are never aliased.
            arr = np.array(value, dtype=np.float64, order="C", copy=True)
        except (TypeError, ValueError):
            raise InputError(source, name, f"a numeric array of shape {shape_text or ''}".rstrip(),
                             "ragged or non-numeric data") from None
        except OverflowError:  # a JSON integer beyond float64's range
            raise InputError(source, name, "numbers within float64's range", "an integer too large") from None
        if shape is not None and arr.shape != shape:
            raise InputError(source, name, f"shape {shape_text} = {shape}", f"{arr.shape}")
        bad = ~np.isfinite(arr)
        if bad.any():
            idx = ", ".join(str(int(i)) for i in np.argwhere(bad)[0])
            raise InputError(source, f"{name}[{idx}]", "a finite number", repr(float(arr[bad][0])))
        return arr

    def _eig_dirs_array(self):
        """eig_dirs in its storage precision: float32 and float64 kept, float16 widened to float32
        (exactly), anything else read as float64.

        Read-only arrays (a memory-mapped file) are used in place; others are copied once, so a
        caller's array is never aliased. Computations read float32 and accumulate in float64.
        """
        try:
            arr = np.asanyarray(self.eig_dirs)
            if arr.dtype == np.float16:
                return arr.astype(np.float32)
            if arr.dtype not in (np.float32, np.float64):
                return np.array(arr, dtype=np.float64, order="C")
        except (TypeError, ValueError):
            raise InputError(self.eigdirs_path, "eig_dirs", "a numeric array of shape (L, H, topk, n)",
                             "ragged or non-numeric data") from None
        if arr.flags.writeable or not arr.flags.c_contiguous:
            return np.array(arr, order="C", copy=True)
        return arr

    def _check_rows(self, eig_dirs):
        """Every row finite and nonzero: one pass, a layer at a time, squared norms summed in float64
        (a non-finite entry makes its row's norm non-finite), no copy of the whole array."""
        for layer in range(eig_dirs.shape[0]):
            block = eig_dirs[layer]
            norm_sq = np.einsum("hkn,hkn->hk", block, block, dtype=np.float64)
            if np.isfinite(norm_sq).all() and norm_sq.all():
                continue
            h, k = (int(i) for i in np.argwhere(~np.isfinite(norm_sq) | (norm_sq == 0))[0])
            row = block[h, k]
            bad = np.flatnonzero(~np.isfinite(row))
            where = f"eig_dirs[{layer}, {h}, {k}"
            if bad.size:
                raise InputError(self.eigdirs_path, f"{where}, {bad[0]}]", "a finite number", repr(float(row[bad[0]])))
            if norm_sq[h, k] == 0:
                raise InputError(self.eigdirs_path, f"{where}]", "a nonzero eigenvector", "a zero row")
            raise InputError(self.eigdirs_path, f"{where}]", "a row whose squared norm is finite in float64",
                             "an overflowing norm")

    def _check_gram(self, gram):
        diag = np.einsum("llh->lh", gram)
        if (diag <= 0).any():
            l, h = (int(i) for i in np.argwhere(diag <= 0)[0])
            raise InputError(self.json_path, f"gram[{l}, {l}, {h}]",
                             "a positive squared norm ||g||_F^2 on the diagonal (cosines divide by it)",
                             f"{float(diag[l, h])!r} (a zero-norm head)")
        norms = np.sqrt(diag)
        bound = norms[:, None, :] * norms[None, :, :] * (1 + _CAUCHY_SCHWARZ_SLACK)
        broken = np.abs(gram) > bound
        if broken.any():
            l, lp, h = (int(i) for i in np.argwhere(broken)[0])
            raise InputError(self.json_path, f"gram[{l}, {lp}, {h}]",
                             "|gram[L, L', h]| <= sqrt(gram[L, L, h] * gram[L', L', h]) (a Gram matrix)",
                             f"{float(gram[l, lp, h])!r} against a bound of {float(bound[l, lp, h]):.6g}")
