"""Lottery tickets: IMP with rewinding (:mod:`tflth.lottery.job`) and the ways its
networks start, resets and controls (:mod:`tflth.lottery.starts`, free of TensorFlow:
the report reads its registry without importing the training engine)."""

_JOB = ("CONTROLS", "RESETS", "ExperimentKey", "LotteryHparams", "LotteryJob", "replicate_hparams")

__all__ = list(_JOB)


def __getattr__(name):
    if name in _JOB:
        from tflth.lottery import job  # noqa: PLC0415  (imports TensorFlow)

        return getattr(job, name)
    raise AttributeError(f"module 'tflth.lottery' has no attribute {name!r}")
