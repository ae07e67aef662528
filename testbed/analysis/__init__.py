"""The analysis of a sweep's run folders: collect, select, endpoints, fits, verdicts, figures and the report. Reads
files; imports neither torch nor Lightning.
"""
