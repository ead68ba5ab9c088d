"""The process harness every tflth binary runs in: help, exit codes, held logs.

A binary's module defines its flags (:mod:`tflth.cli.flags`), builds its job in
``job_from_flags`` and calls :func:`run` with its ``main``, which

* lists the flags defined by tflth's modules under ``--help`` (exit 0), with their help
  and defaults, and nothing of TensorFlow's or absl's own (``--helpfull`` has those);
* turns a bad flag into one line on stderr and exit status 2 (:func:`fail`,
  :func:`parse_flags_or_fail`, :func:`prepare_or_fail`), naming the flag the user typed
  even when a hyperparameter dataclass found the problem
  (:func:`tflth.cli.flags.hparam_errors_as_flags`);
* turns an error while running (diverged loss, damaged state file, full disk, unusable
  checkpoint or mask) into one line on stderr and exit status 1 (:func:`exit_on_run_error`).

Only tflth's own errors about a user's input or files are one line: any other exception
is a bug (tflth's, a zoo model's, a user's ``--model`` function's) and shows its traceback.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import sys

from absl import app, flags
from absl import logging as absl_logging

from tflth import _startup
from tflth.errors import InputError, TflthError
from tflth.hparams import HparamError
from tflth.training.strategy import get_strategy

FLAGS = flags.FLAGS

#: (owner class name, field name) -> the flag that sets it; filled as flags are generated
#: (:func:`tflth.cli.flags.define`), read by :func:`flag_message`.
FIELD_FLAGS: dict[tuple[str, str], str] = {}


def flag_message(error: HparamError) -> str:
    """The error's message with its leading ``Owner.field`` (``HparamError.reference``)
    replaced by the flag that sets that field: ``PruningHparams.fraction=1.5 is invalid:
    ...`` -> ``--pruning_fraction=1.5 is invalid: ...``, and any other setting it names
    later by its flag too; unchanged for errors that name no field."""
    message = str(error)
    return _REFERENCE.sub(_as_flag, message) if getattr(error, "reference", None) else message


_REFERENCE = re.compile(r"\b([A-Z]\w*)\.([a-z_]\w*)\b")


def _as_flag(match: re.Match) -> str:
    """``Owner.field`` in a field error's message (the field at fault, or a hint naming
    another setting, ``PruningHparams.layer_rates=conv1:0``) as the flag that sets it,
    where there is one."""
    flag = FIELD_FLAGS.get((match.group(1), match.group(2)))
    return f"--{flag}" if flag else match.group(0)


@contextlib.contextmanager
def hparam_errors_as_flags():
    """Within the block, an :class:`HparamError` naming a dataclass field is raised again
    naming the flag that sets it (:func:`flag_message`)."""
    try:
        yield
    except HparamError as e:
        message = flag_message(e)
        if message == str(e):
            raise
        raise HparamError(message) from None


def _prog() -> str:
    return sys.argv[0].rsplit("/", 1)[-1] if sys.argv and sys.argv[0] else "tflth"


def _error_exit(message: str, status: int) -> None:
    """``<prog>: error: <message>`` as one line on stderr, then exit ``status``."""
    message = " ".join(line.strip() for line in str(message).splitlines() if line.strip())
    sys.stdout.flush()
    print(f"{_prog()}: error: {message}", file=sys.stderr, flush=True)
    sys.exit(status)


def fail(message: str) -> None:
    """One line on stderr, exit status 2 (a usage error)."""
    _startup.discard()
    _error_exit(message, 2)


def parse_flags_or_fail(argv: list[str]) -> list[str]:
    """An absl ``flags_parser`` that reports a bad flag in one line, exit 2."""
    try:
        rest = FLAGS(argv)
    except flags.Error as e:
        fail(str(e))
    if len(rest) > 1:
        fail(f"unexpected arguments {rest[1:]}; every option is a --flag.")
    check_finite_floats()
    return rest


def check_finite_floats(flag_values=FLAGS) -> None:
    """Every float flag of tflth's (``--lr``, ``--momentum``, ...) must be finite: ``inf``,
    ``nan`` and values that overflow (``1e400``) fail in one line, exit 2."""
    for flag in own_flags(flag_values):
        if isinstance(flag.parser, flags.FloatParser) and flag.value is not None and not math.isfinite(flag.value):
            fail(f"--{flag.name}={flag.value} is invalid: expected a finite number.")


def flags_are_valid() -> None:
    """Call once the flags have been validated: replays TensorFlow's start-up output."""
    _startup.release()


class _HeldLogs(logging.Handler):
    """absl log records held back until the command is known to go on."""

    def __init__(self):
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def replay(self) -> None:
        logger = absl_logging.get_absl_logger()
        for record in self.records:
            logger.handle(record)
        self.records = []


@contextlib.contextmanager
def _held_logs():
    """Within the block, absl log records are held (see :class:`_HeldLogs`), not written."""
    logger, held = absl_logging.get_absl_logger(), _HeldLogs()
    propagate, logger.propagate = logger.propagate, False
    logger.addHandler(held)
    try:
        yield held
    finally:
        logger.removeHandler(held)
        logger.propagate = propagate


def prepare_or_fail(job_from_flags):
    """Build the job from flags and validate it against its data, or fail in one line.

    Validation is building the job's ``--strategy`` (which the run then reuses: see
    :func:`tflth.training.strategy.get_strategy`) and ``job.prepare()`` (which loads the data
    and writes nothing). tflth's :class:`~tflth.errors.InputError` fails with exit status 2,
    its :class:`~tflth.errors.RunError` (a damaged state file found meanwhile) with 1, both
    in one line; any other exception is a bug and keeps its traceback. Returns
    ``(job, dataset)``; then replays TensorFlow's start-up output and the log lines
    written while validating.
    """

    with _held_logs() as held:
        try:
            with hparam_errors_as_flags():
                job = job_from_flags()
                if getattr(job, "strategy", None):
                    get_strategy(job.strategy)  # before loading data: it needs none
                dataset = job.prepare()  # logs the data source, say
        except TflthError as e:
            exit_for(e)  # the one line; what was logged meanwhile is dropped
    flags_are_valid()
    held.replay()
    return job, dataset


def exit_status(error: TflthError) -> int:
    """2 for a user's input (:class:`~tflth.errors.InputError`), 1 for anything else of tflth's."""
    return 2 if isinstance(error, InputError) else 1


def exit_for(error: TflthError) -> None:
    """``<prog>: error: <message>`` on stderr (one line) and exit :func:`exit_status`."""
    _startup.discard()
    _error_exit(flag_message(error) if isinstance(error, HparamError) else str(error), exit_status(error))


def exit_on_run_error(fn, *args, **kwargs):
    """``fn(*args, **kwargs)``; a :class:`~tflth.errors.TflthError` while running exits in
    one line, status by its base (:func:`exit_status`); anything else keeps its traceback."""
    try:
        return fn(*args, **kwargs)
    except TflthError as e:
        exit_for(e)


class _HelpFlag(app.HelpFlag):
    """``--help`` / ``-?``: the command's own flags on stdout, exit status 0."""

    doc = ""  # the command's description, set by run()

    def parse(self, arg):
        if self._parse(arg):
            print_help(self.doc)
            sys.exit(0)


class _HelpshortFlag(_HelpFlag):
    NAME = "helpshort"
    SHORT_NAME = None


class _HelpfullFlag(app.HelpfullFlag):
    """``--helpfull``: every flag, TensorFlow's and absl's included; exit status 0."""

    NAME = "helpfull"

    def parse(self, arg):
        if self._parse(arg):
            app.usage(writeto_stdout=True)
            sys.exit(0)


def _own_help_flags(doc: str) -> None:
    """Replace absl's help flags (which exit 1, and print the ``__main__`` docstring) by ours."""
    app.define_help_flags()
    _HelpFlag.doc = doc
    for cls in (_HelpFlag, _HelpshortFlag, _HelpfullFlag):
        old = FLAGS[cls.NAME]
        if isinstance(old, cls):
            continue
        for name in {old.name, old.short_name} - {None}:
            delattr(FLAGS, name)
        flags.DEFINE_flag(cls(), FLAGS, module_name=app.__name__)


def own_flags(flag_values=FLAGS) -> list:
    """The flags tflth's own modules defined (not TensorFlow's or absl's), by name."""
    found = {f.name: f for module, module_flags in flag_values.flags_by_module_dict().items()
             if module.split(".")[0] == "tflth" for f in module_flags}
    return [found[name] for name in sorted(found)]


def print_help(doc: str = "") -> None:
    """Usage, ``doc`` and the key flags of the main module (see :func:`run`) on stdout."""
    text = f"USAGE: {_prog()} [--flag=value ...]\n"
    if doc and doc.strip():
        text += "\n" + doc.strip().replace("``", "") + "\n"
    listing = FLAGS.main_module_help().lstrip("\n")
    header = f"{sys.argv[0]}:\n"  # absl names the main module; the usage line did already
    text += "\nflags:\n" + (listing[len(header):] if listing.startswith(header) else listing) + "\n"
    text += "\n--helpfull also lists TensorFlow's and absl's own flags.\n"
    sys.stdout.write(text)
    sys.stdout.flush()


def run(main, doc: str | None = None) -> None:
    """``absl.app.run(main)`` for a tflth command.

    The flags tflth's modules defined become key flags of the main module (so absl's
    ``--help`` lists them, and only them), ``--help`` prints ``doc`` (default: the
    docstring of ``main``'s module) with them and exits 0, and flag errors are one line,
    exit 2 (:func:`parse_flags_or_fail`).
    """
    if doc is None:
        doc = sys.modules[main.__module__].__doc__ or ""
    for flag in own_flags():
        FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    _own_help_flags(doc)
    app.run(main, flags_parser=parse_flags_or_fail)
