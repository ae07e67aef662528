"""testbed: does scaling offline training remove causal confusion?

Importing the package itself is cheap (no torch, no Lightning), and so is the entry point (`testbed.cli.main`):
`testbed collect`, `plot` and `report` need neither. LightningCLI as testbed configures it (`testbed.cli.lightning`, for
`fit`, `validate`, `test` and the parser a sweep resolves its runs with) imports `testbed.envs` and
`testbed.baselines`, which registers every environment and baseline: `--data=SpuriousShapes` and `--model=ERM`
resolve because those classes are then imported.
"""

import os

# `import wilds` would otherwise ask PyPI for a newer version at import time.
os.environ.setdefault("OUTDATED_IGNORE", "1")

__version__ = "0.1.0"
