"""One run as `testbed fit` resolves and fits it: the fit config (LightningCLI's parser as testbed configures it),
fitting a resolved config, and fitting several as one packed model.
"""
