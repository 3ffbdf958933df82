"""Open-vocabulary evaluation: base / novel / all box AP on COCO-format data, APr on LVIS."""

from ovdet.evaluation.aggregation import GROUPS, aggregate_precision, mean_precision, resolve_split
from ovdet.evaluation.coco_evaluation import evaluate_coco
from ovdet.evaluation.ground_truth import is_lvis, load_ground_truth
from ovdet.evaluation.lvis_evaluation import evaluate_lvis
from ovdet.evaluation.results import REQUIRED_KEYS, load_results
from ovdet.evaluation.table import format_table

__all__ = [
    "GROUPS",
    "REQUIRED_KEYS",
    "aggregate_precision",
    "evaluate_coco",
    "evaluate_lvis",
    "format_table",
    "is_lvis",
    "load_ground_truth",
    "load_results",
    "mean_precision",
    "resolve_split",
]
