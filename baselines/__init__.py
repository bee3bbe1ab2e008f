"""Baselines of Tables 2 and 3: one module per method, each built from one YAML in conf/method/."""
