"""Class rows from exemplar embeddings: calibrating region rows, mixing a class's name in.

A class given by its name *and* exemplars mixes their *scores*: on a region ``x`` its row scores
``w * cos(x, text) + (1 - w) * cos(x, exemplars)`` with ``w`` = ``EXEMPLARS.TEXT_WEIGHT``
(:func:`mix_by_scores`). Normalising ``w * text + (1 - w) * exemplars`` instead divides those
scores by the mix's norm (about 0.78 for the synthetic benchmark's rows, whose text and exemplar
parts are far from parallel), so such a class out-scored the text classes on their own objects.

A detector's region embeddings fill a narrow cone: any two regions are far more alike (cosine
about 0.75 in the synthetic benchmark's detector) than a region and the text of its own class
(about 0.26). A raw region embedding as a class row would out-score every text row on every
region, so region rows are calibrated against regions sampled from the exemplar images
(:func:`reference_boxes`, :class:`RegionCalibration`): the cone's mean direction is removed, and
the row is scaled down (by mixing in a direction the regions do not use) until its responses
spread like the text rows' do. The result is still one unit row per class: an exemplar class
stays a row of the vocabulary matrix.

CLIP crop rows (source ``clip``) are centred the same way in the detector's rows: ViLD-image
pulls the region embeddings towards CLIP's crops, so a raw crop row is also nearer to every
region than a text row is, and takes base objects. They are not rescaled (measured on the
synthetic benchmark, rescaling to the text rows' spread gained nothing over centring). CLIP
rescoring scores CLIP's own crops, against the crop rows as they are.

Loading, embedding and caching exemplars: :mod:`ovdet.core.exemplars`.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from ovdet.utils.errors import ConfigError, VocabularyError

__all__ = [
    "RegionCalibration",
    "mix_by_scores",
    "mix_class_embeddings",
    "reference_boxes",
    "unused_direction",
]


def mix_by_scores(
    text: torch.Tensor, exemplars: torch.Tensor, text_weight: float, unused: torch.Tensor
) -> torch.Tensor:
    """Unit rows that score a region as the weighted mean of the text's and exemplars' scores.

    ``m = w * text + (1 - w) * exemplars`` (both L2-normalised) scores ``x`` as
    ``w * cos(x, text) + (1 - w) * cos(x, exemplars)``, but is shorter than 1 where the two are
    not parallel, and a vocabulary row is a unit vector (its norm would be divided out, scaling
    the scores up). The row is ``m`` with its component along ``unused`` replaced by what makes
    it unit: on any region orthogonal to ``unused`` (a direction the regions hardly use) it
    scores exactly the mean. ``w`` = 1 (or 0) gives the text (or exemplar) row itself.

    Args:
        text: Tensor[N, D], text rows.
        exemplars: Tensor[N, D], exemplar rows.
        text_weight: ``w`` in [0, 1].
        unused: Tensor[D], unit.

    Returns:
        Tensor[N, D], float32, unit rows.
    """
    mixed = text_weight * F.normalize(text.float(), dim=-1) + (1.0 - text_weight) * F.normalize(
        exemplars.float(), dim=-1
    )
    unused = F.normalize(unused.float(), dim=0)
    along = mixed @ unused
    rest = mixed - along[:, None] * unused
    fill = (1.0 - (rest * rest).sum(-1)).clamp_min(0.0).sqrt()
    sign = torch.where(along < 0, -1.0, 1.0)
    return F.normalize(rest + (sign * fill)[:, None] * unused, dim=-1)


def mix_class_embeddings(
    num_classes: int,
    text: torch.Tensor,
    text_index: Sequence[int],
    exemplars: Sequence[torch.Tensor],
    exemplar_index: Sequence[int],
    text_weight: float,
    unused: torch.Tensor | None = None,
) -> torch.Tensor:
    """The vocabulary's class embeddings from its text rows and its exemplar embeddings.

    Args:
        num_classes: ``C``.
        text: Tensor[T, D], the text embeddings of the classes ``text_index``.
        text_index: T class indices.
        exemplars: per class of ``exemplar_index``, Tensor[K_i, D] (K_i >= 1), its exemplars'
            embeddings; averaged, then L2-normalised.
        exemplar_index: class indices, one per entry of ``exemplars``.
        text_weight: ``w`` for classes in both lists.
        unused: Tensor[D], a unit direction the scored regions hardly use: classes in both
            lists mix their scores (:func:`mix_by_scores`). ``None`` (nothing known of the
            regions' space): ``normalise(w * text + (1 - w) * exemplars)``.

    Returns:
        Tensor[C, D], float32, L2-normalised rows.
    """
    if not 0.0 <= text_weight <= 1.0:
        raise ConfigError(f"the exemplars' text weight must be in [0, 1], got {text_weight}")
    dim = text.shape[1] if len(text_index) else exemplars[0].shape[1]
    out = torch.zeros(num_classes, dim)
    filled = torch.zeros(num_classes, dtype=torch.bool)
    if len(text_index):
        out[list(text_index)] = F.normalize(text.float().cpu(), dim=-1)
        filled[list(text_index)] = True
    for i, embeddings in zip(exemplar_index, exemplars):
        mean = F.normalize(F.normalize(embeddings.float().cpu(), dim=-1).mean(0), dim=-1)
        if not filled[i]:
            out[i] = mean
        elif unused is not None:
            out[i] = mix_by_scores(out[i][None], mean[None], text_weight, unused.cpu())[0]
        else:
            out[i] = text_weight * out[i] + (1.0 - text_weight) * mean
        filled[i] = True
    if not bool(filled.all()):
        raise VocabularyError("a class has neither a text nor an exemplar embedding")
    return F.normalize(out, dim=-1)


def reference_boxes(width: int, height: int) -> torch.Tensor:
    """Boxes that sample an image's regions for :class:`RegionCalibration`: the whole image and
    a 4 x 4 grid of boxes of a quarter and a half of each side. Tensor[33, 4] (x1, y1, x2, y2)."""
    boxes = [[0.0, 0.0, float(width), float(height)]]
    for fraction in (0.25, 0.5):
        w, h = width * fraction, height * fraction
        for i in range(4):
            for j in range(4):
                x = min(max((i + 0.5) * width / 4 - w / 2, 0.0), width - w)
                y = min(max((j + 0.5) * height / 4 - h / 2, 0.0), height - h)
                boxes.append([x, y, x + w, y + h])
    return torch.tensor(boxes, dtype=torch.float32)


class RegionCalibration:
    """Makes the detector's region embeddings of exemplars usable as class rows beside text.

    ``row -> normalise(s * c + sqrt(1 - s^2) * n)`` where ``c`` is the row with the mean
    direction of the reference regions removed (normalised), ``n`` a unit direction the
    reference regions hardly use (made orthogonal to the mean and to ``c``) and ``s`` in
    (0, 1] the ratio of the spread (standard deviation over the
    reference regions) of the text rows' cosines to that of the centred rows'. A region then
    scores ``s`` times its cosine with the centred row: about zero on an average region, as
    text rows do, at the text rows' scale.

    Args:
        centre: Tensor[D], unit, the reference regions' mean direction.
        null: Tensor[D], unit, orthogonal to ``centre``.
        scale: ``s``.
    """

    def __init__(self, centre: torch.Tensor, null: torch.Tensor, scale: float) -> None:
        self.centre, self.null, self.scale = centre, null, float(scale)

    @classmethod
    def fit(
        cls, reference: torch.Tensor, rows: torch.Tensor, text: torch.Tensor
    ) -> RegionCalibration:
        """From reference regions Tensor[M, D], the exemplar rows Tensor[N, D] to calibrate and
        the vocabulary's text rows Tensor[T, D] (``T = 0``: no text to match; ``s = 1``)."""
        reference = F.normalize(reference.float(), dim=-1)
        centre = F.normalize(reference.mean(0), dim=0)
        calibration = cls(centre, unused_direction(reference, centre), 1.0)
        if len(text) and len(reference) > 1:
            centred = calibration._centred(F.normalize(rows.float(), dim=-1))
            text_rows = F.normalize(text.float(), dim=-1)
            text_spread = (reference @ text_rows.t()).std(0, correction=0).mean()
            row_spread = (reference @ centred.t()).std(0, correction=0).mean()
            calibration.scale = float((text_spread / row_spread.clamp_min(1e-6)).clamp(0.05, 1))
        return calibration

    def _centred(self, rows: torch.Tensor) -> torch.Tensor:
        return F.normalize(rows - (rows @ self.centre)[:, None] * self.centre, dim=-1)

    def __call__(self, rows: torch.Tensor) -> torch.Tensor:
        """Tensor[N, D] -> Tensor[N, D], unit rows. A row along the mean direction itself
        (nothing left to tell it by) is kept as it is."""
        rows = F.normalize(rows.float(), dim=-1)
        centred = self._centred(rows)
        null = self.null[None] - (centred @ self.null)[:, None] * centred
        null = F.normalize(null, dim=-1)
        s = self.scale
        out = F.normalize(s * centred + (1.0 - s * s) ** 0.5 * null, dim=-1)
        informative = (rows - (rows @ self.centre)[:, None] * self.centre).norm(dim=-1) > 1e-4
        return torch.where(informative[:, None], out, rows)


def unused_direction(reference: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """A unit direction the reference regions (Tensor[M, D]) hardly use, orthogonal to
    ``centre``: the projection of a fixed vector onto the span of their singular directions
    under 5% of the largest singular value (their null space included). A projection onto a
    subspace, unlike one singular vector of it, does not jump with float rounding, so both
    engines find the same direction."""
    _, values, vh = torch.linalg.svd(reference, full_matrices=True)
    full = torch.zeros(vh.shape[0], dtype=values.dtype)
    full[: len(values)] = values
    unused = vh[full <= 0.05 * full[0]]
    fixed = F.normalize(torch.ones(vh.shape[0]), dim=0)
    direction = unused.t() @ (unused @ fixed) if len(unused) else vh[-1]
    direction = direction - (direction @ centre) * centre
    if direction.norm() < 1e-6:  # the fixed vector lies in the used span: the least used one
        direction = vh[-1] - (vh[-1] @ centre) * centre
    return F.normalize(direction, dim=0)
