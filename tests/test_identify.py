"""`identify` checks each environment and model configuration once, whatever the number of seeds."""

import json

from conftest import CONFIGS

import testbed.sweep.resolve
from testbed.sweep import expand, load_sweep
from testbed.sweep.resolve import identify


def test_each_configuration_is_built_once_not_once_per_seed(tmp_path, monkeypatch):
    sweep = tmp_path / "s.yaml"
    sweep.write_text(json.dumps({"name": "s", "configs": [str(CONFIGS / "envs" / "confounded.yaml")],
                                 "args": {"model": "ERM", "data.n_train": 100},
                                 "axes": {"model.width": [8, 16]}, "seeds": [0, 1, 2]}))
    built, resolver = [], testbed.sweep.resolve.resolver

    def counting_resolver():
        parser = resolver()
        instantiate = parser.instantiate_classes
        parser.instantiate_classes = lambda config: built.append(config.data.init_args.seed) or instantiate(config)
        return parser

    monkeypatch.setattr(testbed.sweep.resolve, "resolver", counting_resolver)
    runs = expand(load_sweep(sweep))
    identify(runs)
    assert len(runs) == 6 and len({run.id for run in runs}) == 6
    assert len(built) == 2  # one per model width, not one per seed
