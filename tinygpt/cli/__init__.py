"""The command line: Hydra's configs composed and run (train.py, generate.py), user errors as one
line. Hydra lives here and in conf/; nothing else in the package imports it."""
