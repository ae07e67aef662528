"""The `testbed` command: usage, dispatch to each command, quiet output, and bad input as one line, exit 2.

`fit`, `validate` and `test` are LightningCLI's (`testbed.cli.lightning`); `sweep`, `collect`, `plot` and `report` are
model-free (`testbed.cli.commands`); `show` draws samples (`testbed.cli.show`). Each command imports what it needs when
it runs, so the analysis commands start without torch or Lightning.
"""

import os
import re
import sys
from argparse import ArgumentError

from testbed.cli.commands import COMMANDS
from testbed.errors import ConfigError
from testbed.quiet import quiet


def one_line(err: BaseException) -> str:
    """The precise cause of a jsonargparse error, as one line naming the field and what is allowed."""
    chain = [err]
    while (nxt := chain[-1].__cause__ or chain[-1].__context__) is not None:
        chain.append(nxt)
    for e in chain:
        if isinstance(e, ConfigError):
            section = "model." if "module.Baseline" in str(err) else "data." if "ShiftedEnv" in str(err) else ""
            return section + str(e)
    keys = [k for e in chain for k in re.findall(r'Parser key "([^"]+)"', str(e))]
    field = ".".join(dict.fromkeys(k for k in keys if k != "config")) or "config"
    cause = " ".join(str(chain[-1]).split())
    section = keys[0] if keys else ""
    if m := re.search(r"Expected a dot import path string: (\S+)", cause):
        from testbed.envs.base import ShiftedEnv
        from testbed.run.config import (
            subclass_names,  # jsonargparse's errors come from LightningCLI or a sweep's resolver
        )
        from testbed.training.module import Baseline

        base, kind = (Baseline, "baseline") if section == "model" else (ShiftedEnv, "environment")
        return (f"{section}: unknown {kind} {m.group(1)!r}; choose one of {', '.join(subclass_names(base))}"
                " or give an import path such as mypackage.MyClass")
    if m := re.search(r"No module named '([^']+)'", cause):
        top = m.group(1).split(".")[0]
        return (f"{section or field}: no module named {m.group(1)!r}; testbed imports plug-ins from the folder it runs "
                f"in and from PYTHONPATH: run it from the folder that holds {top}.py (or the {top}/ package), or "
                "set PYTHONPATH to that folder")
    if m := re.fullmatch(r"Expected a <class '(int|float)'>. Got value: (.*)", cause):
        kind = "an integer" if m.group(1) == "int" else "a finite number"
        return f"{field}: {m.group(2)!r} is not allowed; give {kind}"
    if m := re.search(r"Expected a typing.Literal\[(.*)\]. Got value: (.*)", cause):
        allowed = m.group(1).replace("'", "")
        return f"{field}: {m.group(2)!r} is not allowed; choose one of {allowed}"
    if m := re.search(r"Option '([^']+)' is not accepted", " ".join(str(err).split())):
        return f"{section}.{m.group(1)}: unknown option"
    return f"{field}: {cause}" if keys else cause


def fail(message: str) -> None:
    print(f"testbed: error: {' '.join(message.split())}", file=sys.stderr)  # one line, whatever the message
    sys.exit(2)


USAGE = """usage: testbed COMMAND [options]    (testbed COMMAND --help for each)

train and evaluate (LightningCLI):
  fit       train a baseline on an environment, then test it and write results.json
  validate  evaluate on the validation environments
  test      evaluate a checkpoint on every environment and write results.json
study scaling:
  sweep     run baselines x scales x seeds from a sweep YAML, resumably (local, worker processes or Ray)
  collect   gather a sweep's runs into one tidy table (results.csv)
  plot      draw a sweep's scaling curves (figures/*.png, *.pdf)
  report    write report.md: a verdict per regime and baseline from saturating fits with bootstrap intervals
look at the data:
  show      draw samples of each sub-environment with y, a and their counterfactuals (PNG; text for vectors)

fit, validate and test print one line per epoch (a bar on a terminal) and a table of the results;
--verbose shows Lightning's own messages and warnings too."""


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    verbose = "--verbose" in argv
    argv = [a for a in argv if a != "--verbose"]
    quiet(verbose)
    if "" not in sys.path and os.getcwd() not in sys.path:  # the console script, unlike `python -m`, omits it
        sys.path.insert(0, os.getcwd())  # plug-ins (`--data=my_envs.MyEnv`) import from the working folder
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return
    commands = ["fit", "validate", "test", *COMMANDS, "show"]
    if argv[0] not in commands:
        fail(f"command: {argv[0]!r} is not allowed; choose one of {', '.join(commands)} (testbed --help)")
    try:
        if argv[0] in COMMANDS:
            COMMANDS[argv[0]](argv[1:])
        elif argv[0] == "show":
            from testbed.cli.show import show

            show(argv[1:])
        else:
            from testbed.cli.lightning import check_files, lightning_cli

            check_files(argv)
            # `validate` and `test` print Lightning's metric table only when asked to: testbed prints its own.
            lightning_cli(argv + ["--verbose=false"] if argv[0] in ("validate", "test") and not verbose else argv,
                          verbose)
    except (ConfigError, ArgumentError) as err:  # jsonargparse raises argparse's ArgumentError
        fail(one_line(err))
    except ValueError as err:  # jsonargparse wraps errors raised while instantiating classes
        if not any(isinstance(e, ConfigError) for e in (err.__cause__, err.__context__)):
            raise
        fail(one_line(err))
