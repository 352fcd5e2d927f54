"""The independent part judge (docs/occlusion.md "The judge"; docs/design.md §8 "Measures").

A small supervised per-pixel part segmenter trained on synthetic renders with their true part
masks (``diffparts train-judge``; committed weights in ``data/models/diffparts-part-judge``).
It reads which synthetic part type each pixel shows, by appearance, so measures can ask what a
completion or a generated image *painted*, independently of the pipeline's own position-weighted
assignment. For assessment only: nothing in the pipeline reads it.

    from diffparts.judge import PartJudge, region_scores
    judge = PartJudge.load()                        # data/models/diffparts-part-judge/judge.safetensors
    labels = judge.labels(images)                   # (image, y, x) uint8, CLASSES indices
    region_scores(labels[0], hidden, truth, part)   # iou, iou_hidden, hidden_accuracy, part_recall
"""

from diffparts.judge.model import CLASSES, DEFAULT_JUDGE, LEAVES_JUDGE, PARTS_JUDGE, JudgeArch, JudgeNet, PartJudge
from diffparts.judge.score import (judge_applies, part_presence_by_judge, part_shown_share, region_scores,
                                   score_completion, shown_parts)

__all__ = ["CLASSES", "DEFAULT_JUDGE", "LEAVES_JUDGE", "PARTS_JUDGE", "JudgeArch", "JudgeNet", "PartJudge", "judge_applies",
           "part_presence_by_judge", "part_shown_share", "region_scores", "score_completion", "shown_parts"]
