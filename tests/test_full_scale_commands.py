"""The documentation's commands: every `bin/` command of the README's command-line
quickstart, of "Reproducing the papers at full scale" (docs/full-scale.md) and of the
results sections whose runs are given in full (docs/results-*.md: the headline LeNet
experiment, the vision transformer, the structured tickets) runs, at toy size.

A section is found by its heading, wherever it is in README.md and docs/*.md (exactly one
heading line must match).

Each command of the section's ```sh blocks is extracted (lines continued with ``\\``,
leading ``VAR=value`` assignments such as ``TF_CONFIG`` or ``CUDA_VISIBLE_DEVICES``,
comments, a trailing ``&``, ``--experiment="$(ls -d DIR/lottery_*)"``), then

1. its flags must be flags of *its* binary (asked of the binary in a subprocess: in this
   process every binary's flags share one ``FLAGS``), its argv must parse (so the
   original ``--strategy`` value is accepted) and build its job, and every step it names
   must fall before the end of training on the full data set (CIFAR-10: 50,000 training
   images; ImageNet: 1,281,167);
2. it runs in-process at toy size under ``tfds.testing.mock_data`` (8 fake examples per
   split, no network): the toy flags of :data:`TOY` are appended, ``--output_dir`` and
   ``--data_dir`` point under a temporary directory, ``--experiment`` to the experiment
   its prune command made there, and ``--strategy`` is ``default`` (no GPUs or hosts
   here; the environment assignments are checked, not applied). It must end without a
   non-zero ``SystemExit`` and write its result files.

So a renamed flag, a changed preset or a broken command in the documentation breaks the build.
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest
import tensorflow_datasets as tfds
from absl import flags
from absl.testing import flagsaver

from tflth import presets, steps
from tflth.runs import layout as paths
from tflth.cli import flags as tflags
from tflth.cli import prune as prune_cli
from tflth.cli import stability as stability_cli
from tflth.cli import train as train_cli
from tflth.training.kit import check_schedule_steps, check_step_in_run

FLAGS = flags.FLAGS
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")


def doc_files() -> list[str]:
    """README.md, then every page under docs/ (sorted): where the sections are looked for."""
    return [README] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))


SECTION = "# Reproducing the papers at full scale"  # docs/full-scale.md
# The results sections: the exact commands of their runs, at toy size too (docs/results-*.md).
VIT_SECTION = "# Lottery tickets, rewinding and stability in a vision transformer (Fashion-MNIST, CPU)"
STRUCTURED_SECTION = "# Structured tickets: N:M and channels (Fashion-MNIST, CPU)"
HEADLINE_SECTION = "## Rewinding where its precondition holds: LeNet-300-100 at k = 100 (Fashion-MNIST, CPU)"
QUICKSTART_SECTION = "## Quickstart: the command line"  # README.md
ONE_SHOT_SECTION = "# One-shot pruning at k against IMP with rewinding (Fashion-MNIST, CPU)"
TASKS_SECTION = "# Tickets beyond image classification: a language model and a regression (CPU)"
ALIGN_SECTION = "# Alignment across initialisations: LeNet, a 4× wider LeNet, ResNet-8 and IMP tickets (Fashion-MNIST, CPU)"
CLIS = {"train": train_cli, "prune": prune_cli, "stability": stability_cli}
FULL_TRAIN_EXAMPLES = {"cifar10": 50_000, "cifar100": 50_000, "mnist": 60_000, "fashion_mnist": 60_000,
                       "imagenet2012": 1_281_167}
MOCK_EXAMPLES = 8  # per split: with --batch_size=4, 2 iterations per epoch

# Appended to every command, where its binary has the flag. --levels (prune: a count;
# stability: a list) and --save_steps are shrunk only where the command gives them.
TOY = {
    "training_steps": "2it", "batch_size": "4", "eval_every": "2it", "checkpoint_every": "2it",
    "rewind_step": "1it", "rewind_steps": "1it", "interpolation_points": "3", "train_examples": "8",
    "bn_batches": "1", "pairs": "1", "replicates": "1", "strategy": "default",
}
TOY_WIDTH = {"imagenet2012": "8"}  # ResNet-50 at 224x224 on 2 CPU cores: width 64 -> 8

_BIN = re.compile(r"(?:^|/)bin/(train|prune|stability)\.py$")
_ASSIGN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_LS_GLOB = re.compile(r'"?\$\(ls -d ([^()\s"]+)\)"?')  # "$(ls -d runs/x/lottery_*)"
_GLOB = "@glob:"
_FLAG = re.compile(r"^--(\w+)(?:=(.*))?$", re.S)


@dataclasses.dataclass
class Command:
    index: int
    line: int  # line number (in ``source``) where the command starts
    text: str
    env: dict
    binary: str
    flags: list  # [(name, value)] in order; value None for a bare boolean flag
    source: str = "README.md"  # the file, relative to the repository root

    @property
    def where(self) -> str:
        return f"{self.source} line {self.line}"

    def value(self, name, default=None):
        found = [v for n, v in self.flags if n == name]
        return found[-1] if found else default

    def argv(self, replace=None) -> list[str]:
        """The flags as argv, with ``replace[name](value)`` applied where given."""
        out = []
        for name, value in self.flags:
            if replace and name in replace:
                value = replace[name](value)
            out.append(f"--{name}" if value is None else f"--{name}={value}")
        return out

    def key(self, without=()) -> tuple:
        return (self.binary,) + tuple((n, v) for n, v in self.flags if n not in without)

    @property
    def id(self) -> str:
        extra = "".join(f"-{v}" for n, v in self.flags if n == "strategy")
        extra += "".join(f"-shard{v.replace('/', 'of')}" for n, v in self.flags if n == "shard")
        if "TF_CONFIG" in self.env:
            extra += f"-worker{json.loads(self.env['TF_CONFIG'])['task']['index']}"
        return f"{self.index:02d}-{self.binary}-{self.value('preset', 'nopreset')}{extra}"


class ReadmeError(AssertionError):
    pass


def _headings(lines: list[str], section: str) -> list[int]:
    """Indices of the lines equal to ``section`` outside fenced blocks."""
    found, fenced = [], False
    for i, line in enumerate(lines):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.strip() == section:
            found.append(i)
    return found


def section_lines(section: str = SECTION) -> tuple[str, int, list[str]]:
    """(the file holding the section, relative to the repository root; line number of the
    heading; the section's lines up to the next heading of its level or higher). The
    heading must occur exactly once in README.md and docs/*.md together."""
    hits = []
    for path in doc_files():
        file_lines = open(path, encoding="utf-8").read().splitlines()
        hits += [(os.path.relpath(path, ROOT), file_lines, i) for i in _headings(file_lines, section)]
    if len(hits) != 1:
        where = ", ".join(f"{name} line {i + 1}" for name, _, i in hits) or "none"
        raise ReadmeError(f"README.md and docs/*.md have {len(hits)} lines {section!r} ({where}); expected one.")
    source, lines, start = hits[0]
    level = len(section) - len(section.lstrip("#"))
    end, fenced = len(lines), False
    for i in range(start + 1, len(lines)):
        fenced ^= lines[i].startswith("```")
        hashes = len(lines[i]) - len(lines[i].lstrip("#"))
        if not fenced and 0 < hashes <= level and lines[i][hashes:hashes + 1] == " ":
            end = i
            break
    return source, start + 1, lines[start:end]


def shell_lines(lines: list[str], first: int, source: str = "README.md"):
    """``(line number, logical line)`` of every ```sh block, ``\\`` continuations joined."""
    in_block, pending = False, None
    for n, raw in enumerate(lines, first):
        line = raw.strip()
        if not in_block:
            in_block = line == "```sh"
            continue
        if line == "```":
            if pending:
                raise ReadmeError(f"{source} line {pending[0]}: the block ends inside a continued line.")
            in_block = False
            continue
        start, text = (pending[0], pending[1] + " " + line) if pending else (n, line)
        if text.endswith("\\"):
            pending = (start, text[:-1].rstrip())
            continue
        pending = None
        yield start, text
    if in_block:
        raise ReadmeError(f"{source}: a ```sh block of the section is not closed.")


def parse_command(index: int, line: int, text: str, source: str = "README.md") -> Command | None:
    """The ``bin/`` command on one logical shell line, or None for any other line."""
    tokens = shlex.split(_LS_GLOB.sub(lambda m: _GLOB + m.group(1), text), comments=True)
    env = {}
    while tokens and _ASSIGN.match(tokens[0]):
        name, value = tokens.pop(0).split("=", 1)
        env[name] = value
    if tokens and tokens[-1] == "&":
        tokens.pop()
    if tokens and re.search(r"(^|/)python3?$", tokens[0]):
        tokens.pop(0)
    match = _BIN.search(tokens[0]) if tokens else None
    if not match:
        return None
    parsed = []
    for token in tokens[1:]:
        m = _FLAG.match(token)
        if not m or "$" in token or "`" in token:
            raise ReadmeError(f"{source} line {line}: {token!r} is not a --flag=value this test can run "
                              "(shell syntax other than VAR=value, \\, # comments, a trailing & and "
                              '"$(ls -d DIR/lottery_*)" is not supported).')
        parsed.append((m.group(1), m.group(2)))
    return Command(index, line, text, env, match.group(1), parsed, source)


def readme_commands(section: str = SECTION) -> list[Command]:
    source, first, lines = section_lines(section)
    found = []
    for line, text in shell_lines(lines, first, source):
        cmd = parse_command(len(found), line, text, source)
        if cmd:
            found.append(cmd)
    return found


def _commands_or_problem(section: str):
    try:
        return readme_commands(section), None
    except (ReadmeError, ValueError, OSError) as e:  # reported by the section's coverage test
        return [], str(e)


COMMANDS, README_PROBLEM = _commands_or_problem(SECTION)
VIT_COMMANDS, VIT_PROBLEM = _commands_or_problem(VIT_SECTION)
STRUCTURED_COMMANDS, STRUCTURED_PROBLEM = _commands_or_problem(STRUCTURED_SECTION)
HEADLINE_COMMANDS, HEADLINE_PROBLEM = _commands_or_problem(HEADLINE_SECTION)
QUICKSTART_COMMANDS, QUICKSTART_PROBLEM = _commands_or_problem(QUICKSTART_SECTION)
ONE_SHOT_COMMANDS, ONE_SHOT_PROBLEM = _commands_or_problem(ONE_SHOT_SECTION)
TASKS_COMMANDS, TASKS_PROBLEM = _commands_or_problem(TASKS_SECTION)
ALIGN_COMMANDS, ALIGN_PROBLEM = _commands_or_problem(ALIGN_SECTION)


# ------------------------------------------------------------------ running a command


def _model_of(cmd: Command) -> str:
    if cmd.value("model") or not cmd.value("preset"):
        return cmd.value("model")
    return presets.get(cmd.value("preset")).run.model.name


def _parse(binary: str, argv: list[str]) -> None:
    """Parse ``argv`` as the binary does (call inside a flagsaver)."""
    FLAGS.unparse_flags()
    FLAGS([f"bin/{binary}.py"] + argv)


def _hparams(job):
    return job.hparams if isinstance(job, train_cli.TrainJob) else job.run


def _glob_target(value: str) -> str:
    if not value.startswith(_GLOB):
        raise ReadmeError(f'--experiment={value}: expected "$(ls -d DIR/lottery_*)"')
    return value[len(_GLOB):]


def _glob_targets(value: str) -> list[str]:
    """One target per experiment: a per-k sweep names several, comma-separated."""
    return [_glob_target(part) for part in value.split(",")]


def full_size_check(cmd: Command) -> str:
    """The command parses and builds its job; its steps fall inside the full-size run.
    Returns the dataset name."""
    with flagsaver.flagsaver():
        _parse(cmd.binary, cmd.argv())
        with tflags.hparam_errors_as_flags():
            job = CLIS[cmd.binary].job_from_flags()
    hp = _hparams(job)
    ipe = math.ceil(FULL_TRAIN_EXAMPLES[hp.dataset.name] / hp.training.batch_size)
    end = steps.to_iterations(hp.training.training_steps, ipe)
    named = {"train": lambda: [("--save_steps", s) for s in job.save_steps],
             "prune": lambda: [("--rewind_step", job.lottery.rewind_step)],
             "stability": lambda: [("--rewind_steps", s) for s in job.stability.rewind_steps]}[cmd.binary]()
    for label, s in named:
        k = check_step_in_run(label, s, ipe, end)
        assert k < end, f"{cmd.text}\n{label}={s} is iteration {k}, not before the end of training ({end})"
    check_schedule_steps(hp.training, job.eval_every, job.checkpoint_every, ipe, end)
    return hp.dataset.name


def _toy_path(root: str, path: str) -> str:
    return os.path.join(root, path.lstrip("/"))


def toy_argv(cmd: Command, root: str, dataset: str, own: set[str], init_pairs: bool = False) -> list[str]:
    """The command at toy size. ``init_pairs``: the command's runs are paired across
    initialisations (``--noise=init``, or an experiment such a sweep pairs), which needs k = 0
    and two replicates."""
    def experiment(value):
        out = []
        for target in _glob_targets(value):
            pattern = _toy_path(root, target)
            found = sorted(glob.glob(pattern))
            assert len(found) == 1, f"{pattern} matches {found}: the documentation's ls -d must find one experiment"
            out.append(found[0])
        return ",".join(out)

    def levels(value):
        if cmd.binary == "prune":
            return "1"
        return ",".join(dict.fromkeys("0" if v.strip() == "0" else "1" for v in value.split(",")))

    argv = cmd.argv({"output_dir": lambda v: _toy_path(root, v), "data_dir": lambda v: os.path.join(root, "tfds"),
                     "experiment": experiment, "levels": levels, "compare_levels": lambda v: "1",
                     "save_steps": lambda v: "1it",
                     "strategy": lambda v: "default"})
    toy = {k: v for k, v in TOY.items() if k in own}
    if steps.parse(cmd.value("rewind_step") or "1it") == (0, 0):
        toy["rewind_step"] = "0it"  # the original ticket stays at 0 (per-k sweeps pair k = 0 and k > 0)
    if "," in (cmd.value("experiment") or "") and not cmd.value("rewind_steps"):
        toy.pop("rewind_steps", None)  # a per-k sweep's ks are its experiments' rewind steps
    warmup = cmd.value("warmup") or (presets.get(cmd.value("preset")).run.training.warmup if cmd.value("preset")
                                      else None)
    if warmup and steps.to_iterations(warmup, 1) > 0:  # a warmup longer than the toy training is refused
        toy["warmup"] = "1it"
    if init_pairs:
        toy["replicates"] = "2"  # copy b of replicate r is replicate r + 1's network
        if "rewind_steps" in toy:
            toy["rewind_steps"] = "0it"  # two initialisations are compared from k = 0 only
    if dataset in TOY_WIDTH:
        toy["width"] = TOY_WIDTH[dataset]
    if cmd.value("output_dir") is None:
        toy["output_dir"] = _toy_path(root, "runs")
    return argv + [f"--{k}={v}" for k, v in toy.items()]


def _pair_rows(csv_path: str) -> int:
    with open(csv_path, newline="") as f:
        return sum(row["row"] == "pair" for row in csv.DictReader(f))


def check_outputs(cmd: Command, job) -> None:
    if cmd.binary == "train":
        assert os.path.isfile(paths.RunDir(job.run_dir).result), job.run_dir
        return
    if cmd.binary == "prune":
        exp, lot = job.experiment, job.lottery
        for name in ("results.csv", "results.md", "results.png"):
            assert os.path.isfile(os.path.join(exp.path, name)), (exp.path, name)
        for r in range(lot.replicates):
            for level in range(lot.levels + 1):
                assert exp.level(r, level).finished(), (r, level)
                if not level or not job.compared(level):
                    continue
                for control in lot.controls:
                    assert exp.control(r, level, control).finished(), (r, level, control)
                for method in lot.one_shot:
                    for run in [method] + [f"{method}/{c}" for c in lot.controls]:
                        assert exp.method(r, level, run).finished(), (r, level, run)
        return
    sweep, st = job.sweep, job.stability
    for name in ("stability.csv", "stability.md", "instability.png"):
        assert os.path.isfile(os.path.join(sweep.report_dir, name)), (sweep.report_dir, name)
    ipe = math.ceil(MOCK_EXAMPLES / int(TOY["batch_size"]))
    ks = sorted({steps.to_iterations(s, ipe) for s in st.rewind_steps})
    if not ks:  # a per-k sweep without --rewind_steps: its experiments' rewind steps
        ks = sorted(job._per_k_sources(lambda s: steps.to_iterations(s, ipe)))
    for u in job.shard_units(ks):  # this shard's pairs
        assert os.path.isfile(sweep.pair_result(u.replicate, u.level, u.method, u.k, u.pair)), u
    written = glob.glob(os.path.join(sweep.path, "replicate_*", "**", "pair.json"), recursive=True)
    assert _pair_rows(os.path.join(sweep.report_dir, "stability.csv")) == len(written)  # the report merges them all
    if st.shard == (1, 1):
        assert len(written) == len(job.units(ks))


class Runner:
    """Runs the section's commands at toy size in one directory tree, each once, in order
    of need (a stability sweep of an experiment runs that experiment's prune command first)."""

    def __init__(self, root: str, own_flags: dict, commands: list[Command]):
        self.root, self.own, self.commands = root, own_flags, commands
        self.done: dict[int, object] = {}

    def producers(self, cmd: Command) -> list[Command]:
        out = []
        for target in (os.path.dirname(t) for t in _glob_targets(cmd.value("experiment"))):
            found = [c for c in self.commands if c.binary == "prune" and c.value("output_dir") == target]
            assert found, f"{cmd.where}: no bin/prune.py command writes to --output_dir={target}"
            out.append(found[0])
        return out

    def init_pairs(self, cmd: Command) -> bool:
        """Whether ``cmd`` is a ``--noise=init`` sweep or makes an experiment one pairs."""
        if cmd.value("noise") == "init":
            return True
        return any(c.value("noise") == "init" and cmd in self.producers(c)
                   for c in self.commands if c.binary == "stability" and c.value("experiment"))

    def run(self, cmd: Command):
        if cmd.index in self.done:
            return self.done[cmd.index]
        dataset = full_size_check(cmd)
        if cmd.value("experiment"):
            for producer in self.producers(cmd):
                self.run(producer)
        module = CLIS[cmd.binary]
        argv = toy_argv(cmd, self.root, dataset, self.own[cmd.binary], self.init_pairs(cmd))
        os.makedirs(os.path.join(self.root, "tfds"), exist_ok=True)
        with tfds.testing.mock_data(num_examples=MOCK_EXAMPLES), flagsaver.flagsaver():
            _parse(cmd.binary, argv)
            job = module.job_from_flags()
            try:
                module.main([f"bin/{cmd.binary}.py"])
            except SystemExit as e:
                assert e.code in (0, None), f"{cmd.where}: exit status {e.code} for\n  {' '.join(argv)}"
        check_outputs(cmd, job)
        self.done[cmd.index] = job
        return job


@pytest.fixture(scope="module")
def own_flags():
    """Each binary's own flag names, asked of a fresh process per binary."""
    code = ("from tflth.cli import {0}; from tflth.cli.harness import own_flags; "
            "print(' '.join(f.name for f in own_flags()))")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    procs = {b: subprocess.Popen([sys.executable, "-c", code.format(b)], cwd=ROOT, env=env, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE) for b in CLIS}
    names = {}
    for b, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        names[b] = set(out.strip().splitlines()[-1].split())
    assert "rewind_steps" in names["stability"] and "rewind_steps" not in names["prune"]
    return names


@pytest.fixture(scope="module")
def runner(tmp_path_factory, own_flags):
    root = tmp_path_factory.mktemp("full_scale")
    yield Runner(str(root), own_flags, COMMANDS)
    shutil.rmtree(root, ignore_errors=True)  # VGG-16's toy checkpoints alone take gigabytes


@pytest.fixture(scope="module")
def section_runners(tmp_path_factory, own_flags):
    """One Runner per results section (its own directory tree), made when first needed."""
    runners, roots = {}, []

    def get(section: str) -> Runner:
        if section not in runners:
            roots.append(tmp_path_factory.mktemp("section"))
            runners[section] = Runner(str(roots[-1]), own_flags, SECTION_COMMANDS[section])
        return runners[section]

    yield get
    for root in roots:
        shutil.rmtree(root, ignore_errors=True)


# ------------------------------------------------------------------ tests


def test_section_covers_the_papers():
    assert README_PROBLEM is None, README_PROBLEM
    assert COMMANDS, f"no bin/ commands in the {SECTION!r} section"
    have = {(_model_of(c), c.binary) for c in COMMANDS}
    for model in ("resnet20", "vgg16", "resnet50"):
        for binary in ("prune", "stability"):
            assert (model, binary) in have, f"no bin/{binary}.py command for {model}"
    used = {c.value("preset") for c in COMMANDS}
    assert {"resnet20_cifar10", "resnet20_lowlr_cifar10", "vgg16_cifar10", "resnet50_imagenet"} <= used
    for c in COMMANDS:
        if c.value("preset") and presets.get(c.value("preset")).run.dataset.name == "imagenet2012":
            assert c.value("data_dir"), f"{c.where}: ImageNet needs --data_dir (a prepared tfds directory)"

    assert any(c.value("strategy") == "mirrored" for c in COMMANDS), "no one-host multi-GPU command"

    workers = [c for c in COMMANDS if c.value("strategy") == "multi_worker"]
    assert len(workers) >= 2, "no multi-worker example"
    for c in workers:
        assert "TF_CONFIG" in c.env, f"{c.where}: --strategy=multi_worker without TF_CONFIG"
    configs = [json.loads(c.env["TF_CONFIG"]) for c in workers]
    assert all(len(cfg["cluster"]["worker"]) == 2 and cfg["task"]["type"] == "worker" for cfg in configs)
    assert sorted(cfg["task"]["index"] for cfg in configs) == [0, 1]
    assert len({json.dumps(cfg["cluster"], sort_keys=True) for cfg in configs}) == 1
    assert len({c.key() for c in workers}) == 1, "the workers must run the same command"

    shards = [c for c in COMMANDS if c.value("shard")]
    assert sorted(c.value("shard") for c in shards) == ["1/4", "2/4", "3/4", "4/4"]
    assert len({c.key(without=("shard",)) for c in shards}) == 1, "the shards must differ only in --shard"
    assert len({c.env.get("CUDA_VISIBLE_DEVICES") for c in shards}) == 4, "one GPU per shard"
    last = max(c.index for c in shards)
    assert any(c.index > last and c.key() == shards[0].key(without=("shard",)) for c in COMMANDS), \
        "no run after the shards to write the merged report"


# ~4 minutes on 2 idle cores (VGG-16's 176 MB checkpoints, ResNet-50's tracing): a separate
# CI job (`make test-slow`, run by .ci/run after `make test`) keeps the default suite short.
@pytest.mark.slow
@pytest.mark.parametrize("cmd", COMMANDS, ids=[c.id for c in COMMANDS])
def test_command_runs_at_toy_size(cmd, own_flags, runner):
    unknown = [n for n, _ in cmd.flags if n not in own_flags[cmd.binary]
               and not (n.startswith("no") and n[2:] in own_flags[cmd.binary])]
    assert not unknown, f"{cmd.where}: bin/{cmd.binary}.py has no flag {unknown}"
    if cmd.env.get("TF_CONFIG"):
        json.loads(cmd.env["TF_CONFIG"])
    runner.run(cmd)


def test_vit_section_has_the_runs_of_its_tables():
    assert VIT_PROBLEM is None, VIT_PROBLEM
    assert {c.value("model") for c in VIT_COMMANDS} == {"vit_tiny"}
    stability = [c for c in VIT_COMMANDS if c.binary == "stability"]
    regimes = {(c.value("lr"), c.value("warmup")) for c in stability if not c.value("experiment")}
    assert len(regimes) == 3, regimes  # high rate, the same with warmup, about 4x lower
    assert any(c.value("experiment") for c in stability), "no stability sweep of an IMP experiment"
    assert len({c.value("rewind_step") for c in VIT_COMMANDS if c.binary == "prune"}) >= 2  # k = 0 and k > 0


def test_structured_section_has_the_runs_of_its_tables():
    assert STRUCTURED_PROBLEM is None, STRUCTURED_PROBLEM
    prune = [c for c in STRUCTURED_COMMANDS if c.binary == "prune"]
    models = {c.value("model") or c.value("preset") for c in prune}
    assert {"lenet_300_100_mnist", "conv2"} <= models, models
    for model in models:
        mine = [c for c in prune if (c.value("model") or c.value("preset")) == model]
        kinds = {(c.value("pruning_strategy") or "magnitude", (c.value("nm") or "").split(":")[-1]) for c in mine}
        assert {("magnitude", ""), ("nm", "4"), ("nm", "8"), ("channels", "")} <= kinds, (model, kinds)
        for c in mine:
            assert "random_prune" in (c.value("controls") or ""), f"{c.where}: no structured control"
            assert c.value("replicates") == "3" and c.value("rewind_step"), f"{c.where}"


def test_headline_section_has_the_runs_of_its_tables():
    assert HEADLINE_PROBLEM is None, HEADLINE_PROBLEM
    prune = [c for c in HEADLINE_COMMANDS if c.binary == "prune"]
    kinds = {(c.value("rewind_step"), c.value("rewind_optimizer") or "state") for c in prune}
    assert kinds == {("0it", "state"), ("100it", "state"), ("100it", "fresh")}, kinds
    for c in prune:
        assert c.value("controls") == "random_prune" and c.value("replicates") == "3", f"{c.where}"
        assert c.value("levels") == "15" and c.value("jit_compile") == "chunk", f"{c.where}"
    (sweep,) = [c for c in HEADLINE_COMMANDS if c.binary == "stability"]
    assert len(_glob_targets(sweep.value("experiment"))) == 2 and sweep.value("levels") == "8,15"  # per-k masks


def test_one_shot_section_has_the_runs_of_its_tables():
    assert ONE_SHOT_PROBLEM is None, ONE_SHOT_PROBLEM
    prune = [c for c in ONE_SHOT_COMMANDS if c.binary == "prune"]
    assert {(c.value("preset") or c.value("model"), c.value("rewind_step")) for c in prune} >= {
        ("lenet_300_100_mnist", "0it"), ("lenet_300_100_mnist", "100it"), ("resnet8", "0it"), ("resnet8", "24it")}
    for c in prune:
        assert set(c.value("one_shot").split(",")) == {"magnitude_at_k", "snip", "grasp", "synflow"}, c.where
        assert c.value("controls") == "random_prune" and c.value("replicates") == "3", c.where
        assert c.value("compare_levels") and c.value("rewind_optimizer") == "fresh", c.where
        # chunk for the dense LeNet; convolutions run uncompiled on CPU (docs/speed.md)
        assert c.value("jit_compile") == ("chunk" if c.value("preset") else None), c.where


def test_align_section_has_the_runs_of_its_tables():
    assert ALIGN_PROBLEM is None, ALIGN_PROBLEM
    sweeps = [c for c in ALIGN_COMMANDS if c.binary == "stability"]
    assert all(c.value("noise") == "init" and int(c.value("replicates")) >= 3 for c in sweeps), sweeps  # 3 pairs a row
    dense = {(_model_of(c), c.value("align"), c.value("bn") or "recompute") for c in sweeps if not c.value("experiment")}
    assert dense >= {("lenet_300_100", "weights", "recompute"), ("lenet_300_100", "activations", "recompute"),
                     ("lenet_1200_400", "weights", "recompute"), ("lenet_1200_400", "activations", "recompute"),
                     ("resnet8", "weights", "recompute"), ("resnet8", "weights", "interpolate")}, dense
    tickets = [c for c in sweeps if c.value("experiment")]
    assert {c.value("align") for c in tickets} >= {"weights", "activations"}, tickets
    assert all(c.value("levels") == "8" and c.value("pairs") == "1" for c in tickets), tickets
    (prune,) = [c for c in ALIGN_COMMANDS if c.binary == "prune"]
    assert prune.value("levels") == "8" and prune.value("rewind_step") == "0it" and prune.value("replicates") == "3"


def test_quickstart_section_trains_prunes_and_measures_stability():
    assert QUICKSTART_PROBLEM is None, QUICKSTART_PROBLEM
    assert [c.binary for c in QUICKSTART_COMMANDS] == ["train", "prune", "stability"], QUICKSTART_COMMANDS
    assert all(c.source == "README.md" for c in QUICKSTART_COMMANDS)
    _, prune, sweep = QUICKSTART_COMMANDS
    assert prune.value("rewind_step") and prune.value("controls") and prune.value("levels"), prune.where
    (target,) = _glob_targets(sweep.value("experiment"))
    assert os.path.dirname(target) == prune.value("output_dir"), f"{sweep.where}: --experiment is not the prune run's"
    assert sweep.value("rewind_steps") and sweep.value("levels") == f"0,{prune.value('levels')}", sweep.where


# The results sections' commands (the ViT's, the structured tickets', the headline's) and the
# README quickstart's, each at toy size.
SECTION_COMMANDS = {VIT_SECTION: VIT_COMMANDS, STRUCTURED_SECTION: STRUCTURED_COMMANDS,
                    HEADLINE_SECTION: HEADLINE_COMMANDS, QUICKSTART_SECTION: QUICKSTART_COMMANDS,
                    ONE_SHOT_SECTION: ONE_SHOT_COMMANDS, TASKS_SECTION: TASKS_COMMANDS,
                    ALIGN_SECTION: ALIGN_COMMANDS}
_SECTION_IDS = {VIT_SECTION: "vit", STRUCTURED_SECTION: "structured", HEADLINE_SECTION: "headline",
                QUICKSTART_SECTION: "quickstart", ONE_SHOT_SECTION: "one_shot", TASKS_SECTION: "tasks",
                ALIGN_SECTION: "align"}
_SECTION_CASES = [(section, cmd) for section, cmds in SECTION_COMMANDS.items() for cmd in cmds]


@pytest.mark.slow
@pytest.mark.parametrize("section,cmd", _SECTION_CASES,
                         ids=[f"{_SECTION_IDS[s]}-{c.id}" for s, c in _SECTION_CASES])
def test_section_command_runs_at_toy_size(section, cmd, own_flags, section_runners):
    unknown = [n for n, _ in cmd.flags if n not in own_flags[cmd.binary]]
    assert not unknown, f"{cmd.where}: bin/{cmd.binary}.py has no flag {unknown}"
    section_runners(section).run(cmd)
