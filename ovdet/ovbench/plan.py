"""What the benchmark runs: its sizes, the detectors it trains and the rows of its table.

A new detector is an entry of :data:`DETECTORS`, a new row an entry of :data:`METHODS`; a size
(:class:`BenchmarkSize`) says how much data and compute each uses. Nothing here runs anything:
the stages (:mod:`ovdet.ovbench.stages`) and the run (:mod:`ovdet.ovbench.run`) read these
tables.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

__all__ = [
    "BenchmarkSize",
    "DETECTORS",
    "Detector",
    "FINE_TUNED",
    "FVLM_DETECTOR",
    "MASK_DETECTOR",
    "METHODS",
    "Method",
    "SIZES",
    "WEAK_DETECTORS",
    "run_opts",
    "scene_input_sizes",
]


@dataclass(frozen=True)
class Detector:
    """A detector the benchmark trains.

    Attributes:
        name: its folder.
        overrides: its config ``KEY VALUE`` pairs.
        weak: the field of :class:`~ovdet.ovbench.data.BenchmarkData` naming the
            image-labelled data it also trains on (``DATASETS.WEAK_TRAIN``), or "" for box data
            only. Without that file, the detector and its rows are skipped.
        init_from: the detector whose final weights it starts from (``MODEL.WEIGHTS``), or ""
            for a backbone trained from scratch. The weak-supervision detectors fine-tune the
            box-trained ones on mixed batches, as Detic fine-tunes its box-supervised model.
    """

    name: str
    overrides: tuple[str, ...]
    weak: str = ""
    init_from: str = ""


@dataclass(frozen=True)
class Method:
    """A row of the results table.

    Attributes:
        key: the row's key in ``results.json`` (and ``eval/KEY.json``).
        description: the row's label.
        detector: the :class:`Detector` whose checkpoint it uses.
        prediction: how the checkpoint predicts, one of
            :data:`ovdet.ovbench.predict.PREDICTION_METHODS`.
        open_vocabulary: an ovdet method (a candidate for the best novel AP50 and the pictures).
        control: the key of the row trained as long on box images only, against which this
            row's gain is measured ("" for none): the weak-supervision rows' controls.
    """

    key: str
    description: str
    detector: str
    prediction: str = "detector"
    open_vocabulary: bool = True
    control: str = ""


#: Detectors trained by the benchmark. Among the detectors ready to train, the task graph
#: starts them in this order, so the longest chains go first (the shortest makespan of two
#: workers for the measured task times): ViLD before ViLD-text (ViLD is longer and two
#: fine-tuned detectors wait for it), then the fine-tuned ones longest first.
DETECTORS: list[Detector] = [
    Detector("closed_set", ("MODEL.META_ARCHITECTURE", "FasterRCNN")),
    Detector("vild", ("MODEL.OVDET.DISTILL.MODE", "online")),
    Detector("vild_text", ("MODEL.OVDET.DISTILL.MODE", "none")),
    # weak supervision (Detic): fine-tuned on image-labelled images mixed with the box images;
    # the best combination has no caption loss (it cost the captions row novel AP50)
    Detector(
        "vild_weak", ("MODEL.OVDET.DISTILL.MODE", "online"), weak="weak_labels", init_from="vild"
    ),
    Detector(
        "vild_text_captions",
        ("MODEL.OVDET.DISTILL.MODE", "none", "MODEL.OVDET.WEAK.CAPTION_LOSS", "True"),
        weak="weak_captions",
        init_from="vild_text",
    ),
    Detector(
        "vild_text_labels",
        ("MODEL.OVDET.DISTILL.MODE", "none"),
        weak="weak_labels",
        init_from="vild_text",
    ),
    # the controls of the weak-supervision rows: ViLD and ViLD-text fine-tuned as long, on box
    # images only
    Detector("vild_longer", ("MODEL.OVDET.DISTILL.MODE", "online"), init_from="vild"),
    Detector("vild_text_longer", ("MODEL.OVDET.DISTILL.MODE", "none"), init_from="vild_text"),
]

#: The detector of the mask rows (``--masks``, :attr:`BenchmarkSize.masks`): the quick start's
#: best recipe, ViLD-text + ViLD-image, with the class-agnostic mask head (``MODEL.MASK_ON``),
#: trained as long as ``vild`` on the same boxes and their masks. Not in :data:`DETECTORS`: a
#: run trains it only when asked, after them (nothing starts from it).
MASK_DETECTOR = Detector(
    "vild_masks", ("MODEL.OVDET.DISTILL.MODE", "online", "MODEL.MASK_ON", "True")
)

#: The detector of the F-VLM rows (``--fvlm``, :attr:`BenchmarkSize.fvlm`): the run's own
#: pre-trained CLIP (a ResNet CLIP) frozen as the backbone with a trained FPN, ViLD-text on the
#: base boxes, CLIP rescoring from the backbone's pooled regions (no crops;
#: :mod:`ovdet.core.clip_backbone`). Not in :data:`DETECTORS`: trained only when asked.
FVLM_DETECTOR = Detector(
    "fvlm",
    ("MODEL.OVDET.DISTILL.MODE", "none", "MODEL.BACKBONE.NAME", "build_clip_resnet_fpn_backbone",
     "MODEL.OVDET.CLIP_RESCORING.SOURCE", "backbone"),
)  # fmt: skip

#: The detectors that fine-tune a box-trained one (``Detector.init_from``).
FINE_TUNED = frozenset(d.name for d in DETECTORS if d.init_from)

#: The detectors that train on image-labelled data.
WEAK_DETECTORS = frozenset(d.name for d in DETECTORS if d.weak)

#: Rows of the results table, in order.
METHODS: list[Method] = [
    Method("closed_set", "closed-set Faster R-CNN", "closed_set", open_vocabulary=False),
    Method("clip_on_proposals", "CLIP on proposals", "vild", "clip_on_proposals",
           open_vocabulary=False),
    Method("vild_text", "ViLD-text", "vild_text"),
    Method("vild", "ViLD-text + ViLD-image", "vild"),
    Method("vild_clip_rescoring", "ViLD-text + ViLD-image, CLIP rescoring", "vild",
           "clip_rescoring"),
    Method("vild_text_longer", "ViLD-text, fine-tuned on boxes", "vild_text_longer"),
    Method("vild_longer_clip_rescoring",
           "ViLD-text + ViLD-image, fine-tuned on boxes, CLIP rescoring", "vild_longer",
           "clip_rescoring"),
    Method("vild_text_labels", "ViLD-text + image labels", "vild_text_labels",
           control="vild_text_longer"),
    Method("vild_text_captions", "ViLD-text + image labels + caption loss",
           "vild_text_captions", control="vild_text_longer"),
    Method("vild_weak_clip_rescoring", "ViLD-text + ViLD-image + image labels, CLIP rescoring",
           "vild_weak", "clip_rescoring", control="vild_longer_clip_rescoring"),
    Method("fvlm_detector", "F-VLM detector (frozen CLIP backbone), no CLIP scores", "fvlm"),
    Method("fvlm", "F-VLM: frozen CLIP backbone, CLIP scores of its pooled regions", "fvlm",
           "clip_rescoring"),
]  # fmt: skip


@dataclass(frozen=True)
class BenchmarkSize:
    """How much data and compute one benchmark run uses.

    Attributes:
        data: keyword arguments of :func:`ovdet.data.synthetic.generate_synthetic_dataset`
            (unused with a given dataset).
        clip_epochs, clip_batch_size, clip_lr, clip_warmup: CLIP pre-training.
        detector_iters: training iterations of each detector.
        detector_iters_overrides: ``(name, iterations)`` of detectors trained longer or shorter
            than ``detector_iters``; 0 leaves a detector out, with the detectors that start
            from it and their rows.
        detector_overrides: more config ``KEY VALUE`` pairs for every detector (on the
            synthetic data, after :func:`scene_input_sizes` of ``data["image_size"]``).
        picture_thresh: least score of the detections counted and drawn at the end; ``None``:
            the threshold with the best F1 on the validation images
            (:func:`ovdet.ovbench.pictures.best_f1_threshold`).
        num_pictures: validation images drawn at the end.
        masks: also train :data:`MASK_DETECTOR` and report its box and mask AP50
            (:mod:`ovdet.ovbench.masks`).
        fvlm: also train :data:`FVLM_DETECTOR` and report its rows and inference time
            (:mod:`ovdet.ovbench.fvlm`).
    """

    data: dict
    clip_epochs: int
    clip_batch_size: int
    clip_lr: float
    detector_iters: int
    detector_overrides: tuple[str, ...] = ()
    detector_iters_overrides: tuple[tuple[str, int], ...] = ()
    clip_warmup: int = 50
    picture_thresh: float | None = None
    num_pictures: int = 6
    masks: bool = False
    fvlm: bool = False

    def detectors(self) -> list[Detector]:
        """The detectors of this size's runs: :data:`DETECTORS`, then :data:`MASK_DETECTOR`
        with :attr:`masks` and :data:`FVLM_DETECTOR` with :attr:`fvlm` (each trained where
        :meth:`trains` says so)."""
        extra = [d for d, on in ((MASK_DETECTOR, self.masks), (FVLM_DETECTOR, self.fvlm)) if on]
        return [*DETECTORS, *extra]

    def iters(self, detector: str) -> int:
        """Training iterations of the detector named ``detector`` (0: left out)."""
        return dict(self.detector_iters_overrides).get(detector, self.detector_iters)

    def trains(self, detector: Detector) -> bool:
        """Whether ``detector`` trains at this size: it has iterations, and so does the
        detector it starts from."""
        if self.iters(detector.name) <= 0:
            return False
        start = next((d for d in self.detectors() if d.name == detector.init_from), None)
        return start is None or self.trains(start)

    def with_iters(self, iters: int) -> BenchmarkSize:
        """This size with ``iters`` iterations for every detector trained from scratch; the
        detectors that fine-tune one (:data:`FINE_TUNED`) keep this size's."""
        kept = tuple((d, n) for d, n in self.detector_iters_overrides if d in FINE_TUNED)
        return replace(self, detector_iters=iters, detector_iters_overrides=kept)

    def with_fine_tuning(self, iters: int) -> BenchmarkSize:
        """This size with ``iters`` iterations for every detector that fine-tunes a box-trained
        one (:data:`FINE_TUNED`: the weak-supervision rows and their controls); 0 leaves them
        out."""
        others = tuple((d, n) for d, n in self.detector_iters_overrides if d not in FINE_TUNED)
        return replace(self, detector_iters_overrides=(*others, *_fine_tuning(iters)))


def _fine_tuning(iters: int) -> tuple[tuple[str, int], ...]:
    """``iters`` iterations for each detector of :data:`FINE_TUNED`, in table order."""
    return tuple((d.name, iters) for d in DETECTORS if d.init_from)


def scene_input_sizes(image_size: int) -> tuple[str, ...]:
    """Config ``KEY VALUE`` pairs that train and test the detectors at the size of the synthetic
    scenes, as ``tiny.yaml`` does for its 128 px: a shorter side of 7/8, 1 or 9/8 of
    ``image_size`` in training (box and image-labelled images), ``image_size`` at test, the
    longer side at most 1.5 x it."""
    train = f"({image_size * 7 // 8}, {image_size}, {image_size * 9 // 8})"
    longest = str(image_size * 3 // 2)
    return (
        "INPUT.MIN_SIZE_TRAIN", train, "INPUT.MAX_SIZE_TRAIN", longest,
        "INPUT.MIN_SIZE_TEST", str(image_size), "INPUT.MAX_SIZE_TEST", longest,
        "INPUT.WEAK_MIN_SIZE_TRAIN", train, "INPUT.WEAK_MAX_SIZE_TRAIN", longest,
    )  # fmt: skip


def run_opts(size: BenchmarkSize, synthetic: bool, detector_opts) -> tuple[str, ...]:
    """The config ``KEY VALUE`` pairs every detector of a run gets after the size's: on the
    synthetic data, :func:`scene_input_sizes` of its scenes (a dataset of your own keeps the
    config's input sizes); then ``detector_opts``."""
    scenes = synthetic and "image_size" in size.data
    return (*(scene_input_sizes(size.data["image_size"]) if scenes else ()), *detector_opts)


#: The small size's detector settings (see SIZES), on batches of 8 (synthetic_benchmark.yaml).
_SMALL_DETECTOR_OVERRIDES = (
    # few objects per image: the RoIs (64 per image, synthetic_benchmark.yaml) from 100 proposals
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN", "300",
    "MODEL.RPN.POST_NMS_TOPK_TRAIN", "100",
)  # fmt: skip


SIZES: dict[str, BenchmarkSize] = {
    # The quick start, about 3 minutes on 2 CPU cores: the detectors trained from scratch only
    # (--fine-tune-iters 50 adds the fine-tuned ones), near the least that meets the floor of
    # tests/ovbench/test_synthetic_benchmark.py: the closed-set baseline, which has no text
    # embeddings to share what it learns between compositions, needs ~1500 images seen to pass
    # 0.2 base AP50, so it trains longer than ovdet's detectors (a comparison that favours it);
    # fewer objects (18-48 px, up to 3) in smaller scenes (96 px) than the default size, in
    # batches of 8 (a step has a fixed cost of about 85 ms on one thread, so 8 images cost
    # 1.5 x 4); CLIP needs ~10k distinct crops.
    "small": BenchmarkSize(
        data={
            "num_train_images": 400,
            "num_val_images": 100,
            "num_caption_crops": 9600,
            "num_val_caption_crops": 640,
            "num_weak_images": 400,
            "image_size": 96,
            "crop_size": 32,
            "max_objects": 3,
            "min_object_size": 18.0,
            "max_object_size": 48.0,
            "min_visible": 0.8,
        },
        clip_epochs=4,
        clip_batch_size=128,
        clip_lr=3e-3,
        detector_iters=120,
        detector_iters_overrides=(("closed_set", 240), *_fine_tuning(0)),
        detector_overrides=_SMALL_DETECTOR_OVERRIDES,
    ),
    "default": BenchmarkSize(
        data={
            "num_train_images": 2000,
            "num_val_images": 250,
            "num_caption_crops": 16000,
            "num_val_caption_crops": 1280,
            "num_weak_images": 2000,
            "image_size": 128,
            "crop_size": 32,
        },
        clip_epochs=6,
        clip_batch_size=128,
        clip_lr=3e-3,
        detector_iters=600,
        # 100 fine-tuning iterations (--fine-tune-iters 100) cut the run from 35 to 31 minutes
        # on 2 cores but cost the fine-tuned rows 0.05-0.12 novel AP50
        detector_iters_overrides=_fine_tuning(200),
    ),
}
