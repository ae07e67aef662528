"""The command line: the `testbed` entry point, its commands, LightningCLI's fit/validate/test as testbed prints
them, and `show`.
"""
