"""Lottery tickets: IMP with rewinding (:mod:`tflth.lottery.job`) and the ways its
networks start, resets and controls (:mod:`tflth.lottery.starts`)."""

from tflth.hparams import LotteryHparams
from tflth.lottery.job import CONTROLS, RESETS, LotteryJob
from tflth.runs.naming import ExperimentKey

__all__ = ["CONTROLS", "RESETS", "ExperimentKey", "LotteryHparams", "LotteryJob"]
