"""testbed: does scaling offline training remove causal confusion?

Importing the package registers every environment and baseline with the CLI: `--data=SpuriousShapes`,
`--model=ERM` resolve because their classes are imported here.
"""

import os

# `import wilds` would otherwise ask PyPI for a newer version at import time.
os.environ.setdefault("OUTDATED_IGNORE", "1")

__version__ = "0.1.0"
